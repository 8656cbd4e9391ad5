#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Summarise the hmm-rs guest logs written by scripts/run-vm.sh.

Per boot, two logs. BOOT.log is what the guest's userspace wrote on its own
serial port (ttyS1), where the kernel never writes: the TAP of the suites
the boot ran, bracketed by the markers scripts/guest-init.sh prints
("# hmm-rs: suite NAME begin t=T", "... end rc=N rmmod=N time=Ns t=T"),
each suite's kernel log as "# dmesg: " lines before its end marker, and
"# hmm-rs: done" last. BOOT.console.log, beside it, is the kernel console
(ttyS0), with the host's "# hmm-rs: qemu exit N" line. Markers and TAP
come from the first alone. Kernel splats come from the dmesg dumps, and
from the console for what no dump shows (a panic or a hang before the
dump, a dump that lost lines, a boot that died): such a console line is
placed by its printk timestamp in the suite whose begin and end marker
times (T, the same clock) enclose it, else it is the boot's. A console
line that a dump shows too (same timestamp and text) counts once, where
the dump puts it. A log without a console log beside it (the host suites')
is read alone.

Prints one line per suite, the failed cases, a side-by-side table for
suites run against both modules ("c:NAME" and "rust:NAME"), every kernel
splat with the suite it happened in, and last the line "N passed,
N failed, N skipped". With --bench, also a table per benchmark the suites
printed figures for (hmm_rs_bench's "# bench:" lines, hmm-tests
benchmark_thp_migration's tables): per operation and size the median C
and Rust time over the rounds (suites) that printed it, the spread of
each driver's rounds, Rust/C and its geometric mean, and each driver's
throughput as a fraction of the guest's memcpy() of the same size; and,
given "# profile:" lines (make bench PROFILE=1), the functions of most
time per operation, C and Rust side by side.

A suite also counts as one failure when its module does not load or
unload, when it exits non-zero without a failed case to show for it, when
it reports no case at all or fewer results than its TAP plans ("1..N")
announce, when the kernel splats during it, or when the guest kills it or
never finishes it. A skipped case is a failure unless the plan expects it
("expect-skip SUITE CASE REASON", the reason printed). With --plan, every
suite of the plan must appear in its boot's log. A boot that never reports
back (no ttyS1 log, or one without "# hmm-rs: done") is one failure more,
shown with the console's last lines; so is a splat outside any suite.

A reference suite ("ref:c:NAME") is shown, cases, errors and splats, but
none of it counts, except splats that name this project's module
(rust_test_hmm, rust_kernel) or that the reference driver cannot be told
apart from (Bad page state): the C driver runs after ours on the same
memory, so those may be ours. Each of its cases is compared with
"rust:NAME": the table shows where Rust passes and C does not, and a case
the reference passes that rust:NAME never reported is one failure (a Rust
case that failed is already counted in its own suite). Cases the
reference never ran (it died early) are "not run", not wins. A reference
suite without its rust:NAME is one failure; one that began but reported
no case (it died or hung first) is a note. A boot whose plan suites are
all references is a reference boot: that it never reported back, and its
splats outside any suite, are shown, not counted (our module was never
loaded in it).

Exit status 1 if anything failed, else 0. Speed never fails.
"""

import math
import re
import sys

RESULT = re.compile(r"^(ok|not ok) (\d+)(?: -)?[ \t]*([^#\s]*)[^#]*(#.*)?$")
DIRECTIVE = re.compile(r"#\s*(SKIP\w*|XFAIL|XPASS|TODO)\b\s*(.*)$", re.I)
# TAP plan: "1..N" (a kselftest binary prints one per run).
TAP_PLAN = re.compile(r"^1\.\.(\d+)")
# A runner marker; test output without a newline may stand before it.
MARK = re.compile(r"# hmm-rs: (.*)$")
# What a marker says (anything else after "# hmm-rs: " is informational).
MARKER = re.compile(r"(?:suite (?P<suite>\S+) (?P<what>begin|end|insmod|timeout)\b"
                    r"(?P<rest>.*)|(?P<done>done)\b|qemu exit (?P<qemu>-?\d+)\b|"
                    r"(?:boot|guest|kmemleak|vm)\b)")
KV = re.compile(r"\b(rc|rmmod|t)=(-?\d+(?:\.\d+)?|-)")
# A printk timestamp: where kernel text starts on a console line (wherever
# on the line: QEMU's or the guest's own words may stand before it).
KSTAMP = re.compile(r"\[\s*(\d+\.\d+)\] ")
# A kernel log line in the ttyS1 log: a suite's dump.
DUMP = re.compile(r"# (dmesg|kmemleak): (.*)$")
# How many console lines to show when a boot died.
TAIL = 20


def dump_text(line):
    """(kind, timestamp or None, text) of a dump line, or None."""
    m = DUMP.search(line)
    if not m:
        return None
    k = KSTAMP.match(m.group(2))
    if k:
        return m.group(1), k.group(1), m.group(2)[k.end():].strip()
    return m.group(1), None, m.group(2).strip()


def console_text(line):
    """(timestamp, text) of a console line's kernel part, or None."""
    m = KSTAMP.search(line)
    if m:
        return m.group(1), line[m.end():].strip()
    return None


# What a kernel splat looks like on the console or in dmesg (7.3's wording).
SPLAT = re.compile(
    r"(BUG:|WARNING:|Oops|kernel BUG at|general protection fault|"
    r"Kernel panic|KASAN:|UBSAN:|KFENCE:|ODEBUG:|"
    r"rust_kernel: panicked at|panicked at|"
    r"possible (circular|recursive) locking|lockdep|DEADLOCK|"
    r"unreferenced object|list_(add|del) corruption|refcount_t:|"
    r"rcu_.*detected stalls|self-detected stall|detected expedited stalls|"
    r"Watchdog detected hard LOCKUP|soft lockup|"
    r"blocked for more than \d+ seconds|"
    r"[Bb]ad pmd|[Bb]ad pte|Bad swap file entry|Bad page state|"
    r"Bad page map|Bad rss-counter|"
    r"Call Trace:|RIP: )"
)
# Results from best to worst: a case reported twice keeps the worse.
RANK = ["pass", "skip", "fail"]
# Kernel lines in a reference suite that make a splat this project's (a
# frame in its module, its panics) or that cannot be told apart from it.
OURS = re.compile(r"\[rust_test_hmm\]|rust_kernel:|Bad page state|"
                  r"Bad rss-counter")
# hmm_rs_bench: "# bench: op=NAME size=BYTES ns=N iters=N", ns per
# operation of BYTES (size= is left out by older versions).
BENCH = re.compile(r"^# bench: op=(\S+)(?: size=(\d+))? ns=(\d+) iters=(\d+)")
# Its profile mode: "# profile: op=NAME size=BYTES", then a line of the
# ftrace function profiler: "  func  hits    T us    A us    S us".
PROFILE = re.compile(r"^# profile: op=(\S+) size=(\d+)\s+(\S+)\s+(\d+)"
                     r"\s+([\d.]+) us")
# The kselftest harness starts a case: "#  RUN           fixture.variant.test ..."
RUN = re.compile(r"^#\s+RUN\s+(\S+)")
# hmm-tests benchmark_thp_migration: "=== Two THP Size (4.0 MB) ===", then
# "Sys->Dev Migration   | 1.234 ms        | 2.345 ms        | 47.4%".
THP_HEAD = re.compile(r"^=== .* \(([\d.]+) MB\) ===$")
THP_ROW = re.compile(r"^(Sys->Dev|Dev->Sys) Migration\s*\|\s*([\d.]+) ms\s*\|"
                     r"\s*([\d.]+) ms")


class Suite:
    def __init__(self, boot, name):
        self.boot = boot
        self.name = name
        # "ref:c:hmm-tests": a reference suite of impl "c", compared on
        # "hmm-tests" with "rust:hmm-tests".
        self.ref = name.startswith("ref:")
        impl, _, what = name.removeprefix("ref:").rpartition(":")
        self.impl, self.what = impl, what
        self.cases = {}  # case -> "pass" | "fail" | "skip"
        self.errors = []
        self.splats = []
        self.bench = {}  # (table, op, size) -> ns per operation
        self.profile = {}  # (op, size) -> [(function, hits, us), ...]
        self.ended = False
        self.t_begin = None  # kernel log clock at the markers, seconds
        self.t_end = None
        self.killed = False
        self.rc = None
        self.planned = 0  # sum of the TAP plans ("1..N") printed
        self.results = 0  # TAP result lines seen
        self.notes = []  # expected skips, with their reasons
        self.own_splats = []  # reference suite: splats that may be ours
        self.ours_errors = []  # reference suite: errors that count

    def counts(self):
        """Cases passed, failed (with the suite's own errors, except for
        a reference suite, whose errors count for nothing) and skipped."""
        vals = list(self.cases.values())
        errors = 0 if self.ref else len(self.errors)
        return (vals.count("pass"), vals.count("fail") + errors,
                vals.count("skip"))


def console_path(path):
    """The console log beside a boot's ttyS1 log."""
    return path.removesuffix(".log") + ".console.log"


def read_lines(path):
    """The lines of a log, without line ends (a serial port's \\r too),
    or None if there is no such file."""
    try:
        with open(path, errors="replace") as f:
            return [raw.rstrip("\r\n") for raw in f]
    except FileNotFoundError:
        return None


def tail_of(console):
    """The console's last lines, as the end of an error message."""
    if console is None:
        return " (no console log)"
    lines = [x for x in console if x.strip()][-TAIL:]
    return "; the console's last lines:" + "".join(f"\n#     | {x}"
                                                  for x in lines)


def parse(path, expect_skip=None):
    """Suites, errors and splats outside any suite of one boot's logs.
    expect_skip: {(suite, case): reason} of the skips the plan expects.
    The splats outside any suite are (where, (source, line)) pairs."""
    expect_skip = expect_skip or {}
    boot = path.rsplit("/", 1)[-1].removesuffix(".log")
    suites, cur, done, boot_splats, qemu_rc = [], None, False, [], None
    boot_errors = []
    thp_size, running = "?", "?"
    # The console: QEMU's exit, and kernel lines to check against the dumps.
    console = read_lines(console_path(path))
    for line in console or []:
        m = MARK.search(line)
        mk = MARKER.match(m.group(1)) if m else None
        if mk and mk.group("qemu") is not None:
            qemu_rc = int(mk.group("qemu"))
    user = read_lines(path)
    dumped = set()  # (timestamp, text) of every dump line
    for line in user or []:
        # Kernel text: a dmesg or kmemleak dump line (its timestamps key
        # the console lines it shows too). Test output is never searched
        # for splats: a test may print the words.
        dump = dump_text(line)
        if dump is not None:
            src, ts, ktext = dump
            if ts is not None:
                dumped.add((ts, ktext))
            if cur is not None and cur.ref and OURS.search(ktext):
                cur.own_splats.append((src, ktext))
            if SPLAT.search(ktext):
                if cur is not None:
                    cur.splats.append((src, ktext))
                else:
                    boot_splats.append((f"boot {boot}", (src, ktext)))
            continue
        m = MARK.search(line)
        if m:
            mk = MARKER.match(m.group(1))
            if not mk:
                boot_errors.append(f"damaged marker: {line.strip()!r}")
                continue
            if mk.group("suite"):
                name, what = mk.group("suite"), mk.group("what")
                kv = dict(KV.findall(mk.group("rest")))
                if what == "begin":
                    cur = Suite(boot, name)
                    suites.append(cur)
                    if kv.get("t", "-") != "-":
                        cur.t_begin = float(kv["t"])
                elif cur is None or cur.name != name:
                    boot_errors.append(f"marker for a suite that is not "
                                       f"running: {line.strip()!r}")
                elif what == "end":
                    if "rc" not in kv:
                        boot_errors.append(f"damaged marker: {line.strip()!r}")
                    cur.rc = int(kv.get("rc", "1"))
                    if kv.get("rmmod", "-") not in ("-", "0"):
                        cur.errors.append("module did not unload")
                    if kv.get("t", "-") != "-":
                        cur.t_end = float(kv["t"])
                    cur.ended = True
                    cur = None
                elif what == "insmod":
                    cur.errors.append("module did not load")
                elif what == "timeout":
                    cur.killed = True
                    cur.errors.append(f"killed by the guest "
                                      f"{mk.group('rest').strip()} (hung or too slow)")
            elif mk.group("done"):
                done = True
            elif mk.group("qemu") is not None:
                qemu_rc = int(mk.group("qemu"))
            continue
        if cur is None:
            continue
        b = BENCH.match(line)
        if b:
            size = int(b.group(2) or 0)
            cur.bench[("hmm_rs_bench", b.group(1), size)] = int(b.group(3))
            continue
        b = PROFILE.match(line)
        if b:
            cur.profile.setdefault((b.group(1), int(b.group(2))), []).append(
                (b.group(3), int(b.group(4)), float(b.group(5))))
            continue
        t = RUN.match(line)
        if t:
            running = t.group(1)
            continue
        t = THP_HEAD.match(line)
        if t:
            thp_size = t.group(1)
            continue
        t = THP_ROW.match(line)
        if t:
            way = "s2d" if t.group(1) == "Sys->Dev" else "d2s"
            for kind, ms in (("thp", t.group(2)), ("4k", t.group(3))):
                op = f"{way}.{kind}"
                size = round(float(thp_size) * (1 << 20))
                cur.bench[(running, op, size)] = round(float(ms) * 1e6)
            continue
        p = TAP_PLAN.match(line)
        if p:
            cur.planned += int(p.group(1))
            continue
        r = RESULT.match(line)
        if r:
            name = r.group(3) or f"#{r.group(2)}"
            d = DIRECTIVE.search(r.group(4) or "")
            word = d.group(1).upper() if d else ""
            cur.results += 1
            if word.startswith("SKIP") or word in ("TODO", "XFAIL"):
                # Not a pass unless the plan expects it.
                reason = expect_skip.get((cur.name, name))
                if reason is None and not cur.ref:
                    res = "fail"
                    cur.errors.append(f"{name} {word.lower()} "
                                      f"({d.group(2).strip() or 'no reason'}), "
                                      f"which the plan does not expect")
                else:
                    res = "skip"
                    if reason is not None:
                        cur.notes.append(f"{name} {word.lower()} as "
                                         f"expected: {reason}")
            elif r.group(1) == "ok" and word != "XPASS":
                res = "pass"
            else:
                res = "fail"
            old = cur.cases.get(name)
            if old is not None:
                cur.errors.append(f"{name} reported twice")
                res = max(old, res, key=RANK.index)
            cur.cases[name] = res
    # Console lines no dump shows: in the suite whose markers' times
    # enclose them (one that never ended runs on to the next begin, or
    # to the end), else the boot's.
    timed = [s for s in suites if s.t_begin is not None]
    for line in console or []:
        k = console_text(line)
        if k is None or k in dumped:
            continue
        ts, ktext = float(k[0]), k[1]
        owner = None
        where = "before the first suite" if timed else "no suite began"
        for i, s in enumerate(timed):
            if ts < s.t_begin:
                break
            until = s.t_end
            if until is None:
                until = timed[i + 1].t_begin if i + 1 < len(timed) \
                    else math.inf
            if ts <= until:
                owner = s
                break
            where = f"after {s.name}"
        if owner is not None:
            if owner.ref and OURS.search(ktext):
                owner.own_splats.append(("console", ktext))
            if SPLAT.search(ktext):
                owner.splats.append(("console", ktext))
        elif SPLAT.search(ktext):
            boot_splats.append((f"boot {boot}, {where}", ("console", ktext)))
    for s in suites:
        if not s.ended:
            s.errors.append("guest never finished this suite (hang, crash or timeout)")
        elif s.rc and not s.killed and "fail" not in s.cases.values():
            s.errors.append(f"exited {s.rc} without a failed case to show for it")
        if not s.cases:
            s.errors.append("reported no case at all")
        elif s.results < s.planned:
            s.errors.append(f"stopped short of its TAP plan: {s.results} of "
                            f"{s.planned} results")
        if s.ref and s.own_splats:
            # The reference runs after ours on the same memory: what names
            # our module, or cannot be told apart, counts as ours.
            s.ours_errors.append(f"kernel splat in the reference suite that "
                                 f"may be rust_test_hmm's "
                                 f"({len(s.own_splats)} line(s))")
        if s.splats:
            s.errors.append(f"kernel splat ({len(s.splats)} line(s))")
    errors = [f"boot {boot}: {e}" for e in boot_errors]
    if user is None:
        errors.append(f"boot {boot}: no ttyS1 log ({path}): the guest's "
                      f"userspace never wrote (qemu exit {qemu_rc})"
                      + tail_of(console))
    elif not any(x.strip() for x in user):
        errors.append(f"boot {boot}: the ttyS1 log is empty: the guest's "
                      f"userspace never wrote (qemu exit {qemu_rc})"
                      + tail_of(console))
    elif not done:
        errors.append(f"boot {boot}: the guest never reported back "
                      f"(qemu exit {qemu_rc}; the ttyS1 log stops before "
                      f"\"# hmm-rs: done\")" + tail_of(console))
    if boot_splats:
        errors.append(f"boot {boot}: kernel splat outside any suite")
    return suites, errors, boot_splats


def print_splats(title, splats, limit=40):
    """Each distinct splat line once, with its count and suite. A line
    the console and a dump both show is the dump's alone (parse())."""
    if not splats:
        return
    print(f"#\n# {title} (each distinct line once, with its count):")
    seen = {}
    for where, (src, x) in splats:
        key = (where, re.sub(r"hmm-tests/\d+|#\d+", "", x))
        entry = seen.setdefault(key, [x, 0])
        entry[1] += 1
    for (where, _), (x, n) in list(seen.items())[:limit]:
        print(f"#   [{where}] {x}" + (f"  (x{n})" if n > 1 else ""))
    if len(seen) > limit:
        print(f"#   ... and {len(seen) - limit} more distinct line(s)")


def side_by_side(what, c, r):
    """Informational table of two counted suites; returns nothing."""
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


def compare(what, c, r):
    """Case by case, reference c against rust r. Rust's own results are
    counted in r; what counts here is a case the reference passes that r
    never reported. Returns (passed, failed, skipped) to count and the
    cases r never reported."""
    cases = list(dict.fromkeys(list(c.cases) + list(r.cases)))
    width = max([len(x) for x in cases] + [4])
    verdicts = {}
    for case in cases:
        cr, rr = c.cases.get(case, "-"), r.cases.get(case, "-")
        if cr == "pass":
            verdicts[case] = {"pass": "ok", "-": "FAIL: not run by Rust"}.get(
                rr, "FAIL (counted in Rust's suite)")
        elif cr == "-":
            verdicts[case] = "not run by C"
        else:
            verdicts[case] = "rust beats C" if rr == "pass" else "neither passes"
    print(f"#\n# {what}: rust_test_hmm against the reference C test_hmm "
          f"({c.boot}/{c.name} vs {r.boot}/{r.name})")
    print(f"# {'case':<{width}}  {'C':<5} {'Rust':<5} verdict")
    for case in cases:
        cr, rr = c.cases.get(case, "-"), r.cases.get(case, "-")
        print(f"# {case:<{width}}  {cr:<5} {rr:<5} {verdicts[case]}")
    for impl, s in (("C (reference)", c), ("Rust", r)):
        p, f, k = s.counts()
        print(f"# {impl}: {p} passed, {f} failed, {k} skipped")
    beats = [x for x, v in verdicts.items() if v == "rust beats C"]
    worse = [x for x, v in verdicts.items() if v.startswith("FAIL")]
    unrun = [x for x, v in verdicts.items() if v == "not run by C"]
    print(f"# Rust passes where C does not: {len(beats)} case(s)")
    for x in beats:
        print(f"#   {x}")
    if unrun:
        print(f"# Not run by C (its suite stopped early): {len(unrun)} case(s)")
    print(f"# Rust does not pass where C does: {len(worse)} case(s)")
    for x in worse:
        print(f"#   FAIL {x}")
    missing = [x for x, v in verdicts.items() if v == "FAIL: not run by Rust"]
    return (0, len(missing), 0), missing


def median(values):
    v = sorted(values)
    n = len(v)
    if not n:
        return None
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ns_column(ns):
    return f"{ns:>12.0f}" if ns is not None else f"{'-':>12}"


def size_name(size):
    if not size:
        return "-"
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


# Operations outside the geometric mean: different work in the two drivers
# (test_hmm evicts its whole chunk on release), or no driver at all.
APART = {"open_close": "different work: test_hmm evicts its chunk on release",
         "memcpy": "no driver: the same in both boots, a check on drift"}


def spread(values):
    """How far apart one driver's rounds are: (max - min) / median."""
    m = median(values)
    return (max(values) - min(values)) / m if values and m else 0.0


def bench_tables(suites):
    """Per benchmark, one row per operation and size: the median C and
    Rust time over the rounds (suites) that printed it, Rust/C, how far
    apart each driver's rounds are, and each driver's throughput as a
    fraction of memcpy() of the same size in the same boot; last the
    geometric mean of Rust/C over the rows not in APART, and the rows
    where Rust is slower."""
    tables = {}  # table -> (op, size) -> impl -> [ns, ...]
    for s in suites:
        for (table, op, size), ns in s.bench.items():
            tables.setdefault(table, {}).setdefault((op, size), {}) \
                .setdefault(s.impl, []).append(ns)
    for table, rows in tables.items():
        copy = {size: median(by.get("c", []) + by.get("rust", []))
                for (op, size), by in rows.items() if op == "memcpy"}
        width = max([len(op) for op, _ in rows] + [14])
        print(f"#\n# bench: {table}, median ns per operation "
              f"(Rust/C below 1: Rust faster)")
        if table != "hmm_rs_bench":
            print("# (s2d/d2s.thp/4k: one migration of SIZE to/from the "
                  "device, with/without MADV_HUGEPAGE)")
        if copy:
            print("# (C/Rust of memcpy: memcpy() of the same size over the "
                  "operation's time, both in the same boot)")
        print(f"# {'op':<{width}} {'size':>5} {'C ns':>12} {'Rust ns':>12} "
              f"{'Rust/C':>7}  rounds C+Rust  spread C/Rust"
              + ("  C/Rust of memcpy" if copy else ""))
        logs, slower, one = [], [], False
        for (op, size), by in sorted(rows.items(),
                                     key=lambda x: (x[0][0], x[0][1])):
            c, r = by.get("c", []), by.get("rust", [])
            cm, rm = median(c), median(r)
            ratio = "-"
            if cm and rm:
                ratio = f"{rm / cm:.3f}"
                if op not in APART:
                    logs.append(math.log(rm / cm))
                    if rm > cm:
                        slower.append(f"{op} {size_name(size)} {rm / cm:.3f}")
            if len(c) == 1 or len(r) == 1:
                one = True
            frac = ""
            if copy.get(size) and op != "memcpy":
                frac = "  " + "/".join(f"{copy[size] / x:.2f}" if x else "-"
                                       for x in (cm, rm))
            print(f"# {op:<{width}} {size_name(size):>5} {ns_column(cm)} "
                  f"{ns_column(rm)} {ratio:>7}  {len(c):>8}+{len(r):<5} "
                  f"{spread(c) * 100:5.1f}%/{spread(r) * 100:4.1f}%{frac}")
        for op, why in APART.items():
            if any(o == op for o, _ in rows):
                print(f"# ({op} is not in the geometric mean: {why})")
        if one:
            print("# (rounds 1: that figure is from one round)")
        if logs:
            gm = math.exp(sum(logs) / len(logs))
            print(f"# {'geometric mean':<{width}} {'':>5} {'':>12} {'':>12} "
                  f"{gm:>7.3f}  ({len(logs)} rows)")
            print(f"# Rust slower than C in {len(slower)} of {len(logs)} "
                  f"rows" + (": " + ", ".join(slower) if slower else ""))
    profile_tables(suites)


def profile_tables(suites, top=25):
    """Per operation and size, the functions the profiler counted most
    time in (ftrace's function profiler: the time includes the callees';
    see scripts/config/profile.config), C and Rust side by side on the
    same row for the same function: the profile of the first round of each
    driver that has one. Rows: the functions of most time in either."""
    prof = {}  # (op, size) -> impl -> {function: (hits, us)}
    for s in suites:
        for key, lines in s.profile.items():
            prof.setdefault(key, {}).setdefault(
                s.impl, {f: (h, us) for f, h, us in lines})
    for (op, size), by in sorted(prof.items()):
        c, r = by.get("c", {}), by.get("rust", {})
        print(f"#\n# profile: {op} {size_name(size)}: hits and us (callees "
              f"included) per function; Rust code has no ftrace hook and "
              f"counts in its C caller")
        print(f"# {'function':<30} {'C hits':>8} {'C us':>10} "
              f"{'Rust hits':>9} {'Rust us':>10}")
        names = sorted(set(c) | set(r),
                       key=lambda f: -max(c.get(f, (0, 0))[1],
                                          r.get(f, (0, 0))[1]))
        for f in names[:top]:
            cols = []
            for side, w in ((c, 8), (r, 9)):
                h, us = side.get(f, (None, None))
                cols.append(f"{h if h is not None else '-':>{w}} "
                            f"{us if us is not None else '-':>10}")
            print(f"# {f[:30]:<30} {' '.join(cols)}")


def read_plan(path):
    """The plan's boots with their suites, in order, and the skips it
    expects: ({boot: [suite, ...]}, {(suite, case): reason})."""
    boots, expect, cur = {}, {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            words = line.split()
            if words[0] == "boot":
                cur = boots.setdefault(words[1], [])
            elif words[0] == "host":
                boots.setdefault("host", []).append(
                    "host:" + line[5:].split("|", 1)[0].strip())
            elif words[0] == "expect-skip":
                if len(words) < 4:
                    raise SystemExit(f"{path}: expect-skip needs SUITE CASE "
                                     f"REASON: {line!r}")
                expect[(words[1], words[2])] = " ".join(words[3:])
            elif cur is not None:
                cur.append(line.split("|", 1)[0].strip())
    return boots, expect


def main(args):
    bench = "--bench" in args
    plan = None
    if "--plan" in args:
        i = args.index("--plan")
        plan = args[i + 1]
        args = args[:i] + args[i + 2:]
    paths = [a for a in args if a != "--bench"]
    boots, expect = read_plan(plan) if plan else ({}, {})
    suites, errors, ref_notes = [], [], []
    splats, ref_splats = [], []
    for p in paths:
        s, e, b = parse(p, expect)
        suites += s
        # A boot of reference suites only (the plan says so, or its log
        # when there is no plan) is a reference too: rust_test_hmm was
        # never loaded in it, and that it died or hung is the reference
        # driver's result, shown but not counted.
        boot = p.rsplit("/", 1)[-1].removesuffix(".log")
        names = boots.get(boot) if boots else [x.name for x in s]
        if names and all(n.startswith("ref:") for n in names):
            ref_notes += e
            ref_splats += b
        else:
            errors += e
            splats += b
    for boot, names in boots.items():
        seen = {s.name for s in suites if s.boot == boot}
        for name in names:
            if name not in seen:
                errors.append(f"plan suite {boot}/{name} never ran (no "
                              f"begin marker in its boot's log)")

    print("\n# ===== hmm-rs summary =====")
    for s in suites:
        p, f, k = s.counts()
        note = " (reference: shown, not counted)" if s.ref else ""
        print(f"# {s.boot}/{s.name}: {p} passed, {f} failed, {k} skipped{note}")
        for case, res in s.cases.items():
            if res == "fail":
                print(f"#   FAIL {case}")
        for e in s.errors:
            print(f"#   {'note' if s.ref else 'ERROR'} {e}")
        for e in s.ours_errors:
            print(f"#   ERROR {e}")
        for n in s.notes:
            print(f"#   note {n}")
        if s.ref:
            splats.extend((f"{s.boot}/{s.name} (may be ours)", x)
                          for x in s.own_splats)
            ref_splats.extend((f"{s.boot}/{s.name}", x) for x in s.splats
                              if x not in s.own_splats)
        else:
            splats.extend((f"{s.boot}/{s.name}", x) for x in s.splats)

    # Side by side: suites named c:X and rust:X; a reference c suite is
    # compared case by case instead.
    counted = [0, 0, 0]
    missing_cases = []
    by = {}
    for s in suites:
        if s.impl in ("c", "rust"):
            by.setdefault(s.what, {}).setdefault((s.impl, s.ref), []).append(s)
    for what, impls in by.items():
        rust = impls.get(("rust", False), [])
        for c in impls.get(("c", True), []):
            if not c.cases:
                # It ran (a plan suite that never began is an error
                # above) and died or hung before its first case.
                ref_notes.append(f"reference suite {c.boot}/{c.name} "
                                 f"reported no case: nothing to compare "
                                 f"with")
            elif not rust:
                errors.append(f"reference suite {c.boot}/{c.name} has no "
                              f"rust:{what} to compare with")
            else:
                res, missing = compare(what, c, rust[0])
                counted = [a + b for a, b in zip(counted, res)]
                missing_cases += [f"{c.boot}/{c.name}: {x}" for x in missing]
        plain = impls.get(("c", False), [])
        if plain and rust and not impls.get(("c", True)):
            side_by_side(what, plain[0], rust[0])

    print_splats("kernel splats", splats)
    print_splats("reference-driver splats (test_hmm; shown, not counted)",
                 ref_splats, limit=20)
    if bench:
        bench_tables(suites)
    for n in ref_notes:
        print(f"# note (reference, not counted) {n}")
    for e in errors:
        print(f"# ERROR {e}")

    own = [s for s in suites if not s.ref]
    # What was counted as failed, again at the end: CI shows a log's tail.
    recap = [f"{s.boot}/{s.name}: {case}" for s in own
             for case, res in s.cases.items() if res == "fail"]
    recap += [f"{s.boot}/{s.name}: {e}" for s in own for e in s.errors]
    recap += [f"{c}: not run by Rust" for c in missing_cases]
    recap += [f"{s.boot}/{s.name}: {e}" for s in suites if s.ref
              for e in s.ours_errors]
    for x in recap:
        print(f"# FAILED {x}")
    passed = sum(s.counts()[0] for s in own) + counted[0]
    failed = sum(s.counts()[1] for s in own) + counted[1] + len(errors) + \
        sum(len(s.ours_errors) for s in suites if s.ref)
    skipped = sum(s.counts()[2] for s in own) + counted[2]
    if not own:
        failed += 1
        print("# ERROR no suite ran")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
