"""`python -m expstore ...`: the `expstore` command."""

from .cli import main

raise SystemExit(main())
