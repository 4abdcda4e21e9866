#!/usr/bin/env python3
"""Check that every relative ](path) link in README.md and docs/*.md resolves, and that #anchors match a heading.

    python3 docs/check-links.py [REPO_ROOT] [PATH_ALLOWED_TO_BE_MISSING...]
"""
import glob, os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else '.'
os.chdir(root)
files = ['README.md'] + sorted(glob.glob('docs/*.md'))
allow_missing = set(sys.argv[2:])   # paths known to be written by someone else
def slug(h):
    h = h.strip().lower()
    h = re.sub(r'[^\w\- ]', '', h)   # GitHub: drop punctuation except - and _
    return h.replace(' ', '-')
def anchors(path):
    out, fence = set(), False
    for line in open(path, encoding='utf-8'):
        if line.startswith('```'): fence = not fence; continue
        m = None if fence else re.match(r'#{1,6}\s+(.*)', line)
        if m: out.add(slug(m.group(1)))
    return out
bad = 0
for f in files:
    text = open(f, encoding='utf-8').read()
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    for m in re.finditer(r'\]\(([^)\s]+)\)', text):
        target = m.group(1)
        if re.match(r'[a-z]+:', target): continue       # http:, mailto:
        path, _, frag = target.partition('#')
        full = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
        if not os.path.exists(full):
            if full in allow_missing: print(f'{f}: {target}: missing (allowed)'); continue
            print(f'{f}: {target}: no such file'); bad += 1; continue
        if frag and full.endswith('.md') and frag not in anchors(full):
            print(f'{f}: {target}: no heading #{frag} in {full}'); bad += 1
print(f'{len(files)} files checked, {bad} broken links')
sys.exit(1 if bad else 0)
