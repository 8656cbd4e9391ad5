#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Tests of scripts/tap-summary.py: synthetic guest logs that a correct
runner must fail (or pass), one per way a broken run could slip through.

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


def log_of(*suites, done=True, extra=""):
    """A boot log: each suite is (name, body, rc)."""
    out = []
    for name, body, rc in suites:
        out.append(f"# hmm-rs: suite {name} begin")
        out.append(body.strip("\n"))
        out.append(f"# hmm-rs: suite {name} end rc={rc} rmmod=0 time=1s")
    out.append(extra)
    if done:
        out.append("# hmm-rs: done")
    out.append("# hmm-rs: qemu exit 0 after 5 s")
    return "\n".join(out) + "\n"


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


def run(logs, plan=None):
    """Runs tap-summary on {boot: text} logs and an optional plan text;
    returns (exit status, last line, whole output)."""
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for boot, text in logs.items():
            p = os.path.join(d, f"{boot}.log")
            with open(p, "w") as f:
                f.write(text)
            paths.append(p)
        args = list(paths)
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
        body = GOOD + f"[    3.141592] {line}\n"
        rc, last, out = run({"b": log_of(("rust:x", body, 0))})
        assert rc == 1 and "kernel splat" in out, f"not caught: {line}"
        body = GOOD + f"# dmesg: [    3.141592] {line}\n"
        rc, last, out = run({"b": log_of(("rust:x", body, 0))})
        assert rc == 1 and "kernel splat" in out, f"not caught in dmesg: {line}"


@case
def a_splat_glued_to_a_marker_is_caught():
    text = log_of(("rust:x", GOOD, 0)).replace(
        "# hmm-rs: suite rust:x end",
        "[    2.0] kernel BUG at mm/x.c:1!# hmm-rs: suite rust:x end")
    rc, last, out = run({"b": text})
    assert rc == 1 and "kernel BUG" in out, last


@case
def a_begin_marker_after_console_output_still_opens_the_suite():
    text = log_of(("rust:x", GOOD, 0)).replace(
        "# hmm-rs: suite rust:x begin",
        "[    1.5] random: crng init done# hmm-rs: suite rust:x begin")
    plan = f"boot b\nrust:x|{MOD}|/t/x\n"
    rc, last, _ = run({"b": text}, plan)
    assert rc == 0 and last == "2 passed, 0 failed, 0 skipped", last


@case
def test_output_that_names_a_splat_is_not_one():
    body = tap("ok a.one", "skip a.two").replace(
        "# SKIP not supported", "# SKIP kernel bug (KASAN: use-after-free)")
    plan = f"boot b\nrust:x|{MOD}|/t/x\nexpect-skip rust:x a.two known bug\n"
    rc, last, out = run({"b": log_of(("rust:x", body, 0))}, plan)
    assert rc == 0 and last == "1 passed, 0 failed, 1 skipped", last


@case
def a_splat_glued_after_a_marker_is_caught():
    text = log_of(("rust:x", GOOD, 0)).replace(
        "rmmod=0 time=1s", "rmmod=0 time=1s[   50.1] BUG: Bad rss-counter state")
    rc, last, out = run({"b": text})
    assert rc == 1 and "Bad rss-counter" in out, last


@case
def markers_with_console_text_glued_on_do_not_crash_the_runner():
    # Console text after an end marker's fields: still an end.
    text = log_of(("rust:x", GOOD, 0)).replace(
        "rmmod=0 time=1s", "rmmod=0 time=1s[ 20.1] x: y")
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


@case
def a_reference_splat_that_names_our_module_is_ours():
    body = REF_TAP + "[    9.0] Modules linked in: test_hmm\n" \
        "[    9.1]  dmirror_fops_release+0x1/0x2 [rust_test_hmm]\n" \
        "[    9.2] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2\n"
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0),
                                     ("ref:c:hmm", body, 1))})
    assert rc == 1 and "may be rust_test_hmm's" in out, last


@case
def a_reference_splat_of_its_own_does_not_count():
    body = REF_TAP + "[    9.2] WARNING: CPU: 0 PID: 1 at mm/memremap.c:158 " \
        "memremap_pages+0x1/0x2\n"
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0),
                                     ("ref:c:hmm", body, 1))})
    assert rc == 0 and last == "3 passed, 0 failed, 0 skipped", last


@case
def a_bad_page_state_in_the_reference_suite_counts():
    body = REF_TAP + "[    9.2] BUG: Bad page state in process hmm-tests pfn:1\n"
    rc, last, out = run({"b": log_of(("rust:hmm", RUST_TAP, 0),
                                     ("ref:c:hmm", body, 1))})
    assert rc == 1, last


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
