#!/usr/bin/env python3
# The name of every image a running keiko serves, one per line, in its order: reads /v2/list page
# by page (100 a page) until a page comes back empty. Used by render-bench.sh.
#
#   python3 scripts/list-images.py http://127.0.0.1:PORT
import json, sys, urllib.request
page = 1
while items := json.load(urllib.request.urlopen(f"{sys.argv[1]}/v2/list?page={page}&limit=100")):
    print("\n".join(i["name"] for i in items))
    page += 1
