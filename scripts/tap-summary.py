#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Summarise the hmm-rs guest console logs written by scripts/run-vm.sh.

Each log holds the TAP of the suites one boot ran, bracketed by the markers
scripts/guest-init.sh prints, and the kernel messages. Prints one line per
suite, the failed cases, a side-by-side table for suites run against both
modules ("c:NAME" and "rust:NAME"), every kernel splat with the suite it
happened in, and last the line "N passed, N failed, N skipped".

A suite also counts as one failure when its module does not load or
unload, when it exits non-zero without a failed case to show for it, when
the kernel splats during it, or when the guest kills it or never finishes
it. Exit status 1 if anything failed, else 0.
"""

import re
import sys

RESULT = re.compile(r"^(ok|not ok) (\d+) (\S+)(.*)$")
DIRECTIVE = re.compile(r"#\s*(SKIP|XFAIL|TODO)\b\s*(.*)$", re.I)
MARK = re.compile(r"^# hmm-rs: (.*)$")
# What a kernel splat looks like on the console or in dmesg.
SPLAT = re.compile(
    r"(BUG:|WARNING:|Oops|kernel BUG at|general protection fault|"
    r"Kernel panic|KASAN:|UBSAN:|KFENCE:|ODEBUG:|"
    r"possible (circular|recursive) locking|lockdep|DEADLOCK|"
    r"unreferenced object|list_(add|del) corruption|"
    r"rcu_.*detected stalls|blocked for more than \d+ seconds|"
    r"Call Trace:|RIP: )"
)
# Kernel lines may carry a timestamp; console lines may carry dmesg's prefix.
STRIP = re.compile(r"^(# dmesg: )?(\[\s*\d+\.\d+\] )?")


class Suite:
    def __init__(self, boot, name):
        self.boot = boot
        self.name = name
        self.cases = {}  # case -> "pass" | "fail" | "skip"
        self.errors = []
        self.splats = []
        self.ended = False
        self.rc = None

    def counts(self):
        vals = list(self.cases.values())
        return (vals.count("pass"), vals.count("fail") + len(self.errors),
                vals.count("skip"))


def parse(path):
    boot = path.rsplit("/", 1)[-1].removesuffix(".log")
    suites, cur, done, boot_splats, qemu_rc = [], None, False, [], None
    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            m = MARK.match(line)
            if m:
                words = m.group(1).split()
                if words[:1] == ["suite"] and len(words) >= 3:
                    if words[2] == "begin":
                        cur = Suite(boot, words[1])
                        suites.append(cur)
                    elif words[2] == "end" and cur:
                        kv = dict(w.split("=", 1) for w in words[3:] if "=" in w)
                        cur.rc = int(kv.get("rc", "0"))
                        if kv.get("rmmod", "-") not in ("-", "0"):
                            cur.errors.append("module did not unload")
                        cur.ended = True
                        cur = None
                    elif words[2] == "insmod" and cur:
                        cur.errors.append("module did not load")
                    elif words[2] == "timeout" and cur:
                        cur.errors.append(f"killed by the guest after "
                                          f"{words[4]} s (hung or too slow)")
                elif words[:1] == ["done"]:
                    done = True
                elif words[:2] == ["qemu", "exit"]:
                    qemu_rc = int(words[2])
                continue
            text = STRIP.sub("", line)
            if SPLAT.search(text):
                (cur.splats if cur else boot_splats).append(text.strip())
                continue
            if cur is None:
                continue
            r = RESULT.match(line)
            if r:
                d = DIRECTIVE.search(r.group(4))
                if d and d.group(1).upper() == "SKIP":
                    res = "skip"
                elif r.group(1) == "ok" or (d and d.group(1).upper() == "TODO"):
                    res = "pass"
                else:
                    res = "fail"
                cur.cases[r.group(3)] = res
    for s in suites:
        if not s.ended:
            s.errors.append("guest never finished this suite (hang, crash or timeout)")
        elif s.rc and not any(v == "fail" for v in s.cases.values()):
            s.errors.append(f"exited {s.rc} without a failed case to show for it")
        if s.splats:
            s.errors.append(f"kernel splat ({len(s.splats)} line(s))")
    errors = []
    if not done:
        errors.append(f"boot {boot}: the guest never reported back "
                      f"(qemu exit {qemu_rc})")
    if boot_splats:
        errors.append(f"boot {boot}: kernel splat outside any suite")
    return suites, errors, boot_splats


def main(paths):
    suites, errors, splats = [], [], []
    for p in paths:
        s, e, b = parse(p)
        suites += s
        errors += e
        splats += [(f"boot {p}", x) for x in b]

    print("\n# ===== hmm-rs summary =====")
    for s in suites:
        p, f, k = s.counts()
        print(f"# {s.boot}/{s.name}: {p} passed, {f} failed, {k} skipped")
        for case, res in s.cases.items():
            if res == "fail":
                print(f"#   FAIL {case}")
        for e in s.errors:
            print(f"#   ERROR {e}")
        splats += [(f"{s.boot}/{s.name}", x) for x in s.splats]

    # Side by side: suites named c:X and rust:X.
    by = {}
    for s in suites:
        if ":" in s.name:
            impl, what = s.name.split(":", 1)
            by.setdefault(what, {})[impl] = s
    for what, impls in by.items():
        if not {"c", "rust"} <= impls.keys():
            continue
        c, r = impls["c"], impls["rust"]
        cases = list(dict.fromkeys(list(c.cases) + list(r.cases)))
        width = max([len(x) for x in cases] + [4])
        print(f"#\n# {what}: C test_hmm vs rust_test_hmm")
        print(f"# {'case':<{width}}  {'C':<5} {'Rust':<5}")
        for case in cases:
            cr, rr = c.cases.get(case, "-"), r.cases.get(case, "-")
            note = "  <-- differs" if cr != rr else ""
            print(f"# {case:<{width}}  {cr:<5} {rr:<5}{note}")
        for impl, s in (("C", c), ("Rust", r)):
            p, f, k = s.counts()
            print(f"# {impl}: {p} passed, {f} failed, {k} skipped")

    if splats:
        print("#\n# kernel splats (each distinct line once, with its count):")
        seen = {}
        for where, x in splats:
            key = (where, re.sub(r"hmm-tests/\d+|#\d+", "", x))
            seen.setdefault(key, [x, 0])[1] += 1
        for (where, _), (x, n) in list(seen.items())[:40]:
            print(f"#   [{where}] {x}" + (f"  (x{n})" if n > 1 else ""))
    for e in errors:
        print(f"# ERROR {e}")

    passed = sum(s.counts()[0] for s in suites)
    failed = sum(s.counts()[1] for s in suites) + len(errors)
    skipped = sum(s.counts()[2] for s in suites)
    if not suites:
        failed += 1
        print("# ERROR no suite ran")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
