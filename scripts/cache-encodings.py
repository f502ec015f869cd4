#!/usr/bin/env python3
# The WebP files of keiko's cache directory that its manifest lists as encodings (DIR/<key>.webp
# for every record with an "encoded" outcome), one path per line. Used by render-bench.sh.
#
#   python3 scripts/cache-encodings.py CACHE_DIR/manifest.json
import json, sys
m = json.load(open(sys.argv[1]))
print("\n".join(sys.argv[1].rsplit("/", 1)[0] + "/" + r["encoded"]["key"] + ".webp" for r in m["records"] if "encoded" in r))
