"""`python -m Utils.loops.funnel summarize|tables|plot ...`, kept working for old commands: the funnel
now lives in the package `Utils.funnel` (one module per stage), its command line in
`Utils.funnel.report` (`python -m Utils.funnel.report ...`)."""

from Utils.funnel.report import main

if __name__ == "__main__":
    raise SystemExit(main())
