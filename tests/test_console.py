"""Training progress off a terminal: plain lines at a steady interval, the
first and the last always, and every event line; nothing from a process
that is not the first."""
import io

from csrnn_jax import console


def test_progress_off_a_terminal_prints_lines_not_a_bar():
  out = io.StringIO()  # not a tty, as a SLURM or CI log
  progress = console.Progress(100, 0, stream=out, interval=3600)
  for step in (10, 20, 30):
    progress.update(step, 5.0, 1000.0)
  progress.note("step 30: checkpoint saved")
  progress.update(100, 4.0, 1000.0)
  progress.close()
  lines = out.getvalue().splitlines()
  assert "\r" not in out.getvalue()
  assert lines == [
      lines[0], "step 30: checkpoint saved", lines[2]]
  assert lines[0].startswith("step 10/100 (10%): 5.000 bits/sample, 1000 "
                             "samples/s")
  assert lines[2].startswith("step 100/100 (100%): 4.000 bits/sample")


def test_progress_interval_zero_prints_every_update():
  out = io.StringIO()
  progress = console.Progress(100, 0, stream=out, interval=0)
  for step in (10, 20, 30):
    progress.update(step, 5.0, 1000.0)
  assert [l.split(":")[0] for l in out.getvalue().splitlines()] == [
      "step 10/100 (10%)", "step 20/100 (20%)", "step 30/100 (30%)"]


def test_other_processes_print_nothing():
  out = io.StringIO()
  progress = console.Progress(100, 0, enabled=False, stream=out, interval=0)
  progress.update(10, 5.0, 1000.0)
  progress.note("step 10: checkpoint saved")
  progress.close()
  assert out.getvalue() == ""
