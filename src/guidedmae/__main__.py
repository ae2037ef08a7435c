"""`python -m guidedmae ...` and `torchrun ... -m guidedmae ...`: the `guidedmae` command."""

from guidedmae.cli import main

raise SystemExit(main())
