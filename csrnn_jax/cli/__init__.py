"""The command lines, one module each, with its argument parsing and
``main(argv) -> exit status``; the library never imports this package.

  prepare       csrnn-prepare        audio folders or a CSV -> a dataset
  train         csrnn-train          (train.py) train or resume a run
  sample        csrnn-sample         (sample.py) generate wav files
  evaluate      csrnn-evaluate       NLL of a split; generated audio
  report        csrnn-report         one table of several runs
  import_torch  csrnn-import-torch   an original PyTorch checkpoint -> a run
  export_torch  csrnn-export-torch   a run -> an original PyTorch checkpoint

``common`` holds what they share: the error format, ``--workdir`` and
``--step``.
"""
