"""Splits a `perf report --no-children --sort dso,sym --stdio -g none` text into kernel / runtime
native / JIT runtime JS / JIT ours / other, in % and in µs per item (issue 12, step 2).

  python3 scripts/profile/perf_split.py REPORT.txt US_PER_ITEM [TOP]

JIT code comes from --perf-basic-prof (dso "[JIT] tid N"); it is ours when its source is in src/,
main.ts, the Node bundle main.mjs or scripts/profile/ref_servers.ts, runtime JS otherwise
(ext:deno_node, node:internal, V8 builtins' JS).
"""
import re
import sys

text = open(sys.argv[1]).read()
per = float(sys.argv[2])
top_n = int(sys.argv[3]) if len(sys.argv) > 3 else 6
groups, top = {}, {}
for m in re.finditer(r"^\s+([0-9.]+)%\s+(.+?)\s+\[(.)\]\s+(.*)$", text, re.M):
    pct, dso, kind, sym = float(m[1]), m[2].strip(), m[3], m[4].strip()
    if kind == "k" or dso.startswith("[kernel"):
        g = "kernel"
    elif dso.startswith("[JIT") or dso.startswith("perf-"):
        ours = any(s in sym for s in ("/src/", "main.mjs", "main.ts", "ref_servers"))
        g = "JIT: ours" if ours else "JIT: runtime JS"
    elif dso in ("deno", "node"):
        g = "native: " + dso
    elif dso.startswith("libc"):
        g = "native: libc"
    elif dso.startswith("lib"):
        g = "native: other libraries"
    else:
        g = "other: " + dso
    groups[g] = groups.get(g, 0) + pct
    top.setdefault(g, []).append((pct, sym[:100]))
total = sum(groups.values()) or 1
for g, pct in sorted(groups.items(), key=lambda kv: -kv[1]):
    print(f"  {g:28s} {pct / total * 100:5.1f} %  {per * pct / total:7.1f} µs")
    for p, sym in sorted(top[g], reverse=True)[:top_n]:
        print(f"      {p:5.2f} %  {sym}")
