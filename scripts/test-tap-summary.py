#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Tests of scripts/tap-summary.py: synthetic guest logs that a correct
runner must fail (or pass), one per way a broken run could slip through.

A boot is two logs, as scripts/run-vm.sh writes them: BOOT.log, what the
guest's userspace wrote on ttyS1 (markers, TAP, dmesg dumps), and
BOOT.console.log, the kernel console (ttyS0) and QEMU's exit.

Prints TAP (run by `make check` as the host suite host:tap-summary), exit
status 1 if any test fails.
"""

import contextlib
import io
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
summary = __import__("tap-summary")

MOD = "rust_test_hmm|spm_addr_dev0=0x180000000"


def at(i, dt=0.0):
    """Kernel log time dt seconds into suite i (0-based) of log_of(): it
    begins at 10 * (i + 1) and ends 8 s later."""
    return 10.0 * (i + 1) + dt


def kline(t, text):
    """A kernel log line as the console and dmesg print it."""
    return f"[{t:12.6f}] {text}"


def log_of(*suites, done=True, extra=""):
    """A boot's ttyS1 log: each suite is (name, body, rc), suite i from
    at(i) to at(i, 8)."""
    out = []
    for i, (name, body, rc) in enumerate(suites):
        out.append(f"# hmm-rs: suite {name} begin t={at(i):.6f}")
        out.append(body.strip("\n"))
        out.append(f"# hmm-rs: suite {name} end rc={rc} rmmod=0 time=1s "
                   f"t={at(i, 8):.6f}")
    out.append(extra)
    if done:
        out.append("# hmm-rs: done")
    return "\n".join(out) + "\n"


def console_of(*lines, qemu=0):
    """A boot's console log: kernel lines (see kline()), then QEMU's exit
    as run-vm.sh appends it."""
    return "\n".join(["# hmm-rs: boot b", "[    0.000000] Linux version 7.3.4",
                      *lines, f"# hmm-rs: qemu exit {qemu} after 5 s"]) + "\n"


def tap(*results, plan=None):
    """kselftest-style TAP: results are "ok NAME", "not ok NAME" or
    "skip NAME"."""
    lines = ["TAP version 13", f"1..{plan if plan is not None else len(results)}"]
    for i, r in enumerate(results, 1):
        word, name = r.split(" ", 1) if not r.startswith("not ok") else \
            ("not ok", r[len("not ok "):])
        if word == "skip":
            lines.append(f"ok {i} {name} # SKIP not supported")
        else:
            lines.append(f"{word} {i} {name}")
    return "\n".join(lines) + "\n"


def run(logs, plan=None, args=()):
    """Runs tap-summary on {boot: ttyS1 text or (ttyS1 text, console
    text)} logs (None: no such file; a console not given: a clean one) and
    an optional plan text; returns (exit status, last line, whole output)."""
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for boot, texts in logs.items():
            user, console = texts if isinstance(texts, tuple) else \
                (texts, console_of())
            p = os.path.join(d, f"{boot}.log")
            for path, text in ((p, user),
                               (os.path.join(d, f"{boot}.console.log"), console)):
                if text is not None:
                    with open(path, "w") as f:
                        f.write(text)
            paths.append(p)
        args = list(paths) + list(args)
        if plan is not None:
            pp = os.path.join(d, "plan")
            with open(pp, "w") as f:
                f.write(plan)
            args = ["--plan", pp] + args
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = summary.main(args)
        text = out.getvalue()
        return rc, text.strip().splitlines()[-1], text


GOOD = tap("ok a.one", "ok a.two")
CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def a_clean_run_passes():
    rc, last, _ = run({"b": log_of(("rust:x", GOOD, 0))},
                      f"boot b\nrust:x|{MOD}|/t/x\n")
    assert rc == 0 and last == "2 passed, 0 failed, 0 skipped", last


@case
def a_failed_case_fails():
    rc, last, _ = run({"b": log_of(("rust:x", tap("ok a.one", "not ok a.two"), 1))})
    assert rc == 1 and last.startswith("1 passed, 1 failed"), last


@case
def what_failed_is_named_again_at_the_end():
    rc, _, out = run({"b": log_of(("rust:x", tap("ok a.one", "not ok a.two"), 1),
                                  ("rust:y", "TAP version 13\n1..0\n", 0))})
    tail = out.strip().splitlines()[-4:]
    assert rc == 1 and "# FAILED b/rust:x: a.two" in tail, tail
    assert "# FAILED b/rust:y: reported no case at all" in tail, tail


@case
def an_unexpected_skip_fails():
    rc, last, out = run({"b": log_of(("rust:x", tap("ok a.one", "skip a.two"), 0))})
    assert rc == 1 and "which the plan does not expect" in out, last


@case
def an_expected_skip_passes_with_its_reason():
    plan = f"boot b\nrust:x|{MOD}|/t/x\nexpect-skip rust:x a.two no THP here\n"
    rc, last, out = run({"b": log_of(("rust:x", tap("ok a.one", "skip a.two"), 0))}, plan)
    assert rc == 0 and last == "1 passed, 0 failed, 1 skipped", last
    assert "as expected: no THP here" in out, out


@case
def a_suite_with_no_case_fails():
    rc, last, out = run({"b": log_of(("rust:x", "TAP version 13\n1..0\n", 0))})
    assert rc == 1 and "reported no case at all" in out, last


@case
def a_suite_short_of_its_plan_fails():
    rc, last, out = run({"b": log_of(("rust:x", tap("ok a.one", plan=3), 0))})
    assert rc == 1 and "stopped short of its TAP plan: 1 of 3" in out, last


@case
def a_plan_suite_that_never_ran_fails():
    plan = f"boot b\nrust:x|{MOD}|/t/x\nrust:y|{MOD}|/t/y\n"
    rc, last, out = run({"b": log_of(("rust:x", GOOD, 0))}, plan)
    assert rc == 1 and "plan suite b/rust:y never ran" in out, last


@case
def a_host_suite_of_the_plan_is_checked_too():
    plan = f"host runner|true\nboot b\nrust:x|{MOD}|/t/x\n"
    rc, last, out = run({"b": log_of(("rust:x", GOOD, 0))}, plan)
    assert rc == 1 and "plan suite host/host:runner never ran" in out, last


@case
def a_guest_that_never_reports_back_fails():
    rc, last, out = run({"b": log_of(("rust:x", GOOD, 0), done=False)})
    assert rc == 1 and "never reported back" in out, last


@case
def a_suite_the_guest_never_finished_fails():
    text = "# hmm-rs: suite rust:x begin\n" + GOOD
    rc, last, out = run({"b": text})
    assert rc == 1 and "never finished this suite" in out, last


SPLATS = [
    "rust_kernel: panicked at rust/test_hmm/dmirror.rs:400:34:",
    "kernel BUG at rust/helpers/bug.c:7!",
    "rcu: INFO: rcu_preempt self-detected stall on CPU",
    "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { 1-... }",
    "NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
    "list_add corruption. prev->next should be next",
    "list_del corruption, ffff888100000000->next is LIST_POISON1",
    "refcount_t: underflow; use-after-free.",
    "mm/pgtable-generic.c:53: bad pmd 00000000deadbeef(0000000000000001)",
    "mm/memory.c:123: bad pte 00000000deadbeef(8000000000000067)",
    "Bad swap file entry 3fffffffffffffff",
    "BUG: Bad page state in process hmm-tests  pfn:1f000",
    "BUG: Bad rss-counter state mm:00000000deadbeef type:MM_ANONPAGES val:1",
    "INFO: task hmm-tests:123 blocked for more than 120 seconds.",
    "watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [hmm-tests:99]",
    "WARNING: CPU: 0 PID: 1 at mm/memremap.c:158 memremap_pages+0x1/0x2",
]


@case
def every_splat_of_7_3_fails_the_suite():
    for line in SPLATS:
        # On the console only (no dump shows it), in the dump only, both.
        dump = f"# dmesg: {kline(at(0, 3), line)}\n"
        for body, con in ((GOOD, console_of(kline(at(0, 3), line))),
                          (GOOD + dump, console_of()),
                          (GOOD + dump, console_of(kline(at(0, 3), line)))):
            rc, last, out = run({"b": (log_of(("rust:x", body, 0)), con)})
            assert rc == 1 and "ERROR kernel splat (1 line(s))" in out, \
                f"not caught once: {line}\n{out}"


@case
def a_splat_glued_to_console_text_at_a_marker_is_caught():
    # At the very time of the end marker, after other console text.
    con = console_of("qemu: some warning" + kline(at(0, 8), "kernel BUG at mm/x.c:1!"))
    rc, last, out = run({"b": (log_of(("rust:x", GOOD, 0)), con)})
    assert rc == 1 and "[b/rust:x] kernel BUG" in out, out


@case
def a_begin_marker_after_test_output_still_opens_the_suite():
    # A suite that ends without a newline: the next marker on its line.
    text = log_of(("rust:w", GOOD + "no newline", 0), ("rust:x", GOOD, 0))
    text = text.replace("no newline\n# hmm-rs: suite rust:w end",
                        "no newline# hmm-rs: suite rust:w end")
    plan = f"boot b\nrust:w|{MOD}|/t/w\nrust:x|{MOD}|/t/x\n"
    rc, last, _ = run({"b": text}, plan)
    assert rc == 0 and last == "4 passed, 0 failed, 0 skipped", last


@case
def test_output_that_names_a_splat_is_not_one():
    body = tap("ok a.one", "skip a.two").replace(
        "# SKIP not supported", "# SKIP kernel bug (KASAN: use-after-free)")
    plan = f"boot b\nrust:x|{MOD}|/t/x\nexpect-skip rust:x a.two known bug\n"
    # A test that prints kernel log lines (its own dmesg) does not splat.
    body += "# [    3.000000] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2\n"
    rc, last, out = run({"b": log_of(("rust:x", body, 0))}, plan)
    assert rc == 0 and last == "1 passed, 0 failed, 1 skipped", last


@case
def a_splat_after_the_last_end_marker_fails_the_boot():
    con = console_of(kline(at(0, 9), "BUG: Bad rss-counter state"))
    rc, last, out = run({"b": (log_of(("rust:x", GOOD, 0)), con)})
    assert rc == 1 and "Bad rss-counter" in out, last
    assert "ERROR boot b: kernel splat outside any suite" in out, out
    assert "[boot b, after rust:x] BUG" in out, out
    assert "b/rust:x: 2 passed, 0 failed" in out, out


@case
def markers_with_text_glued_on_do_not_crash_the_runner():
    # Text after an end marker's fields: still an end.
    text = log_of(("rust:x", GOOD, 0)).replace(
        f"t={at(0, 8):.6f}", f"t={at(0, 8):.6f}[ 20.1] x: y")
    rc, last, _ = run({"b": text})
    assert rc == 0 and last == "2 passed, 0 failed, 0 skipped", last
    # A cut timeout marker: still a killed suite, never finished.
    text = "# hmm-rs: suite rust:x begin\n" + GOOD + \
        "# hmm-rs: suite rust:x timeout\n# hmm-rs: done\n"
    rc, last, out = run({"b": text})
    assert rc == 1 and "killed by the guest" in out, last
    # A marker that says nothing the runner knows: an error.
    text = log_of(("rust:x", GOOD, 0)).replace(
        "# hmm-rs: suite rust:x end", "# hmm-rs: su[ 3.0] ite rust:x end")
    rc, last, out = run({"b": text})
    assert rc == 1 and "damaged marker" in out, last


@case
def a_case_reported_twice_keeps_the_worse_result():
    body = "TAP version 13\n1..1\nnot ok 1 a.one\nTAP version 13\n1..1\nok 1 a.one\n"
    rc, last, out = run({"b": log_of(("rust:x", body, 0))})
    assert rc == 1 and "reported twice" in out, last


@case
def odd_result_forms_are_not_passes():
    for res in ("ok 2 # SKIP no device", "ok 2 a.two # XPASS",
                "not ok 2 a.two # TODO broken", "ok 2 a.two # XFAIL",
                "ok 2 - a.two # SKIP"):
        body = f"TAP version 13\n1..2\nok 1 a.one\n{res}\n"
        rc, last, out = run({"b": log_of(("rust:x", body, 0))})
        assert rc == 1, (res, last)


@case
def a_console_splat_no_dump_shows_fails_the_suite():
    # A splat on the console that never made it into the dump (the guest
    # skipped it, or the dump lost the line): the suite of its time fails.
    body = GOOD + "# dmesg: " + kline(at(0, 2), "rust_test_hmm: loaded") + "\n"
    con = console_of(kline(at(0, 3), "BUG: kernel NULL pointer dereference, "
                           "address: 0000000000000000"))
    plan = f"boot b\nrust:x|{MOD}|/t/x\n"
    rc, last, out = run({"b": (log_of(("rust:x", body, 0)), con)}, plan)
    assert rc == 1 and last == "2 passed, 1 failed, 0 skipped", last
    assert "b/rust:x: 2 passed, 1 failed" in out, out
    assert "[b/rust:x] BUG: kernel NULL pointer" in out, out
    # The same line in the dump too: one splat line, not two.
    body += "# dmesg: " + con.splitlines()[2] + "\n"
    rc, last, out = run({"b": (log_of(("rust:x", body, 0)), con)}, plan)
    assert rc == 1 and "ERROR kernel splat (1 line(s))" in out, out
    assert "(x2)" not in out, out


@case
def a_splat_during_a_suite_is_that_suites():
    suites = [(f"rust:{n}", GOOD, 0) for n in "wxy"]
    con = console_of(kline(at(0, 4), "random: crng init done"),
                     kline(at(1, 0), "WARNING: CPU: 1 PID: 9 at mm/x.c:1 f+0x1"),
                     kline(at(1, 0.1), "Call Trace:"))
    rc, last, out = run({"b": (log_of(*suites), con)})
    assert rc == 1 and last == "6 passed, 1 failed, 0 skipped", last
    assert "b/rust:w: 2 passed, 0 failed" in out, out
    assert "b/rust:x: 2 passed, 1 failed" in out, out
    assert "b/rust:y: 2 passed, 0 failed" in out, out
    assert "[b/rust:x] WARNING" in out, out


@case
def a_console_line_a_later_dump_shows_is_that_suites():
    # Printed after rust:w's dump: the console places it in rust:w, but
    # rust:x's dump shows it; it counts once, in rust:x.
    line = kline(at(0, 7.5), "BUG: sleeping function called from invalid context")
    body = GOOD + f"# dmesg: {line}\n"
    rc, last, out = run({"b": (log_of(("rust:w", GOOD, 0), ("rust:x", body, 0)),
                               console_of(line))})
    assert rc == 1 and last == "4 passed, 1 failed, 0 skipped", last
    assert "b/rust:w: 2 passed, 0 failed" in out, out
    assert "b/rust:x: 2 passed, 1 failed" in out, out


@case
def console_interleaving_does_not_matter():
    # Console lines cut into each other, and marker-like text there, at
    # every marker's time: the markers and TAP come from ttyS1 alone.
    con = console_of(
        kline(at(0), "random: crng init") + kline(at(0), "ACPI: x"),
        "# hmm-rs: suite rust:x end rc=1 rmmod=1",
        kline(at(0, 1), "rust_test_hmm: loaded") + "# hmm-rs: suite rust:z begin",
        "not ok 7 a.three",
        kline(at(0, 8), "rust_test_hmm: unloaded") + kline(at(0, 8), "x"))
    plan = f"boot b\nrust:x|{MOD}|/t/x\n"
    rc, last, out = run({"b": (log_of(("rust:x", GOOD, 0)), con)}, plan)
    assert rc == 0 and last == "2 passed, 0 failed, 0 skipped", out


@case
def a_splat_before_any_suite_fails_the_boot():
    con = console_of(kline(1.5, "WARNING: CPU: 0 PID: 1 at init/main.c:1 f"))
    rc, last, out = run({"b": (log_of(("rust:x", GOOD, 0)), con)})
    assert rc == 1 and "[boot b, before the first suite] WARNING" in out, out
    assert "b/rust:x: 2 passed, 0 failed" in out, out


@case
def a_missing_ttys1_log_fails_with_the_console_tail():
    con = console_of(kline(2.0, "Kernel panic - not syncing: Attempted to "
                           "kill init! exitcode=0x00000100"), qemu=0)
    plan = f"boot b\nrust:x|{MOD}|/t/x\n"
    for user in (None, ""):
        rc, last, out = run({"b": (user, con)}, plan)
        assert rc == 1, last
        assert ("no ttyS1 log" if user is None else "the ttyS1 log is empty") \
            in out, out
        assert "#     | [    2.000000] Kernel panic - not syncing" in out, out
        assert "(qemu exit 0)" in out, out
        assert "plan suite b/rust:x never ran" in out, out
        assert "[boot b, no suite began] Kernel panic" in out, out


@case
def a_guest_that_died_in_a_suite_fails_it_with_the_console_tail():
    # ttyS1 stops mid-suite (the tty's buffer lost with the guest), the
    # panic is on the console only: it is the running suite's.
    text = log_of(("rust:w", GOOD, 0)) .replace("# hmm-rs: done\n", "") + \
        f"# hmm-rs: suite rust:x begin t={at(1):.6f}\nTAP version 13\n1..2\nok 1 a"
    con = console_of(kline(at(1, 30), "Oops: general protection fault, probably "
                           "for non-canonical address 0xdead: 0000 [#1] SMP"),
                     kline(at(1, 30.1), "Kernel panic - not syncing: Fatal exception"),
                     qemu=0)
    rc, last, out = run({"b": (text, con)})
    assert rc == 1, last
    assert "b/rust:w: 2 passed, 0 failed" in out, out
    assert "never finished this suite" in out, out
    assert "[b/rust:x] Oops: general protection fault" in out, out
    assert "stops before \"# hmm-rs: done\"" in out, out
    assert "#     | [   50.100000] Kernel panic - not syncing: Fatal" in out, out


@case
def a_timeout_shows_qemu_exit_and_console_tail():
    text = log_of(("rust:x", GOOD, 0), done=False)
    con = console_of(kline(at(0, 9), "rcu: INFO: rcu_preempt self-detected "
                           "stall on CPU"), qemu=124)
    rc, last, out = run({"b": (text, con)})
    assert rc == 1 and "never reported back (qemu exit 124" in out, out
    assert "self-detected stall" in out, out


@case
def bench_figures_make_tables():
    bench = ("# bench: op=read size=2097152 ns={} iters=10\n"
             "# bench: op=write size=2097152 ns=200 iters=10\n"
             "# bench: op=memcpy size=2097152 ns=100 iters=10\n"
             "# bench: op=open_close size=0 ns={} iters=10\n")
    thp = ("#  RUN           hmm.hmm_device_private.benchmark_thp_migration ...\n"
           "=== Two THP Size (4.0 MB) ===\n"
           "Sys->Dev Migration   | {} ms        | 2.000 ms        | 47.4%\n"
           "Dev->Sys Migration   | 1.000 ms        | 2.000 ms        | 50.0%\n")
    # Three rounds a driver: the median is the row's figure; open_close
    # is shown but not in the geometric mean.
    text = log_of(("c:bench.1", GOOD + bench.format(100, 1), 0),
                  ("rust:bench.1", GOOD + bench.format(50, 1000), 0),
                  ("rust:bench.2", GOOD + bench.format(40, 1000), 0),
                  ("c:bench.2", GOOD + bench.format(1000, 1), 0),
                  ("c:bench.3", GOOD + bench.format(90, 1), 0),
                  ("rust:bench.3", GOOD + bench.format(60, 1000), 0),
                  ("c:thp", GOOD + thp.format("1.000"), 0),
                  ("rust:thp", GOOD + thp.format("2.000"), 0))
    rc, last, out = run({"b": text}, args=["--bench"])
    assert rc == 0 and last == "16 passed, 0 failed, 0 skipped", out
    rows = {tuple(x.split()[1:3]): x.split()[3:6] for x in out.splitlines()
            if x.startswith("# ") and len(x.split()) > 5}
    assert rows[("read", "2M")] == ["100", "50", "0.500"], rows
    assert rows[("write", "2M")] == ["200", "200", "1.000"], rows
    assert rows[("open_close", "-")] == ["1", "1000", "1000.000"], rows
    assert rows[("s2d.thp", "4M")] == ["1000000", "2000000", "2.000"], rows
    # memcpy of 100 ns against read's 100 and 50: C 1.00, Rust 2.00.
    assert "1.00/2.00" in [x.split()[-1] for x in out.splitlines()
                           if x.startswith("# read ")], out
    # A geometric mean per benchmark: read 0.5 and write 1; s2d.thp 2 and
    # 1 for the other three.
    assert "0.707  (2 rows)" in out and "1.189  (4 rows)" in out, out
    assert "Rust slower than C in 1 of 4 rows: s2d.thp 4M 2.000" in out, out
    assert "that figure is from one round" in out, out


@case
def profile_lines_make_side_by_side_tables():
    prof = ("# bench: op=to_sys_4k size=2097152 ns=10 iters=1\n"
            "# profile: op=to_sys_4k size=2097152   copy_page"
            "     512    {} us     0.100 us     0.000 us\n")
    text = log_of(("c:bench.1", GOOD + prof.format("51.200"), 0),
                  ("rust:bench.1", GOOD + prof.format("60.000"), 0))
    rc, last, out = run({"b": text}, args=["--bench"])
    assert rc == 0, out
    assert "# profile: to_sys_4k 2M" in out, out
    line = [x for x in out.splitlines() if x.startswith("# copy_page")][0]
    assert line.split() == ["#", "copy_page", "512", "51.2", "512",
                            "60.0"], line


REF_TAP = tap("ok h.one", "not ok h.two", "ok h.three")
RUST_TAP = tap("ok h.one", "ok h.two", "ok h.three")


@case
def comparison_counts_each_case_once():
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0),
                                     ("ref:c:hmm", REF_TAP, 1))})
    assert rc == 0 and last == "3 passed, 0 failed, 0 skipped", last
    assert "rust beats C: 1" in out.replace("Rust passes where C does not: 1",
                                            "rust beats C: 1"), out


@case
def a_case_c_passes_and_rust_never_ran_fails():
    rust = tap("ok h.one", "ok h.two")
    rc, last, out = run({"b": log_of(("rust:hmm", rust, 0),
                                     ("ref:c:hmm", REF_TAP, 1))})
    assert rc == 1 and "FAIL: not run by Rust" in out, last


@case
def cases_a_dead_reference_never_ran_are_not_wins():
    ref = tap("ok h.one", plan=3)
    text = log_of(("rust:hmm", RUST_TAP, 0)) + \
        "# hmm-rs: suite ref:c:hmm begin\n" + ref
    rc, last, out = run({"b": text})
    assert "Rust passes where C does not: 0 case(s)" in out, out
    assert "Not run by C (its suite stopped early): 2 case(s)" in out, out


OURS_SPLAT = ["Modules linked in: test_hmm",
              " dmirror_fops_release+0x1/0x2 [rust_test_hmm]",
              "WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2"]


@case
def a_reference_splat_that_names_our_module_is_ours():
    # In the reference suite's dump, or on the console alone.
    lines = [kline(at(1, 1 + i / 10), x) for i, x in enumerate(OURS_SPLAT)]
    dump = "".join(f"# dmesg: {x}\n" for x in lines)
    for body, con in ((REF_TAP + dump, console_of()),
                      (REF_TAP, console_of(*lines))):
        rc, last, out = run({"b": (log_of(("rust:hmm", RUST_TAP, 0),
                                          ("ref:c:hmm", body, 1)), con)})
        assert rc == 1 and "may be rust_test_hmm's" in out, last


@case
def a_reference_splat_of_its_own_does_not_count():
    line = kline(at(1, 2), "WARNING: CPU: 0 PID: 1 at mm/memremap.c:158 "
                 "memremap_pages+0x1/0x2")
    for body, con in ((REF_TAP + f"# dmesg: {line}\n", console_of()),
                      (REF_TAP, console_of(line))):
        rc, last, out = run({"b": (log_of(("rust:hmm", RUST_TAP, 0),
                                          ("ref:c:hmm", body, 1)), con)})
        assert rc == 0 and last == "3 passed, 0 failed, 0 skipped", last
        assert "reference-driver splats" in out, out


@case
def a_bad_page_state_in_the_reference_suite_counts():
    line = kline(at(1, 2), "BUG: Bad page state in process hmm-tests pfn:1")
    for body, con in ((REF_TAP + f"# dmesg: {line}\n", console_of()),
                      (REF_TAP, console_of(line))):
        rc, last, out = run({"b": (log_of(("rust:hmm", RUST_TAP, 0),
                                          ("ref:c:hmm", body, 1)), con)})
        assert rc == 1 and "may be rust_test_hmm's" in out, last



REF_PLAN = (f"boot b\nrust:hmm|{MOD}|/t/hmm\n"
            f"boot r timeout=120\nref:c:hmm|test_hmm|x|/t/hmm\n")


@case
def a_reference_boot_that_hangs_is_shown_not_counted():
    # The C driver hangs in an unkillable loop: its boot never reports
    # back. That is the reference's result, not a failure of ours.
    hung = "# hmm-rs: suite ref:c:hmm begin t=10.0\n" + tap("ok h.one", plan=3)
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0)),
                         "r": (hung, console_of(qemu=124))}, REF_PLAN)
    assert rc == 0 and last.endswith("0 failed, 0 skipped"), last
    assert "note (reference, not counted) boot r: the guest never " \
        "reported back" in out, out


@case
def a_reference_boot_splat_outside_suites_is_not_counted():
    line = kline(300.0, "BUG: kernel NULL pointer dereference, address: 0")
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0)),
                         "r": (log_of(("ref:c:hmm", REF_TAP, 1)),
                               console_of(line))}, REF_PLAN)
    assert rc == 0, last
    assert "reference-driver splats" in out, out


@case
def a_boot_with_our_suite_that_hangs_still_fails():
    # The same hang with a suite of ours in the boot is ours to answer.
    plan = f"boot b\nrust:hmm|{MOD}|/t/hmm\nref:c:hmm|test_hmm|x|/t/hmm\n"
    text = log_of(("rust:hmm", RUST_TAP, 0), done=False) + \
        "# hmm-rs: suite ref:c:hmm begin t=20.0\n"
    rc, last, out = run({"b": (text, console_of(qemu=124))}, plan)
    assert rc == 1 and "never reported back" in out, last


@case
def a_reference_that_reports_no_case_is_a_note():
    hung = "# hmm-rs: suite ref:c:hmm begin t=10.0\n# seed 1\n"
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0)),
                         "r": (hung, console_of(qemu=124))}, REF_PLAN)
    assert rc == 0, last
    assert "reference suite r/ref:c:hmm reported no case" in out, out
    # ... but a reference suite the plan names and that never began is
    # still an error.
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0)),
                         "r": (log_of(), console_of())}, REF_PLAN)
    assert rc == 1 and "never ran" in out, last


def main():
    print("TAP version 13")
    print(f"1..{len(CASES)}")
    failed = 0
    for i, fn in enumerate(CASES, 1):
        try:
            fn()
            print(f"ok {i} tap_summary.{fn.__name__}")
        except Exception as e:  # noqa: BLE001 (a crash of the runner fails too)
            failed += 1
            print(f"# {fn.__name__}: {type(e).__name__}: {e}")
            print(f"not ok {i} tap_summary.{fn.__name__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
