"""`python -m rnnexp.report`: the same as `rnnexp-report`."""

from rnnexp.report import main

main()
