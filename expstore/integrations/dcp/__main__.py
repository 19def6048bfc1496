"""`python -m expstore.integrations.dcp verify|delete URL [--endpoint-url URL]`: the checks the `expstore`
CLI does not make on DCP checkpoints. Exit status 0 ok, 1 a check failed or nothing is committed."""

from __future__ import annotations

import argparse
import json
import sys

from expstore.errors import StoreError

from .verify import delete_dcp_checkpoint, verify_dcp_checkpoint


def main(argv: list[str] | None = None) -> int:
    """Run one command; print its result as JSON, or the error on stderr."""
    parser = argparse.ArgumentParser(prog="python -m expstore.integrations.dcp", description=__doc__)
    parser.add_argument("command", choices=["verify", "delete"])
    parser.add_argument("url", help="the URL the checkpoint was saved to (StoreWriter's url)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (credentials come from the usual AWS environment)")
    args = parser.parse_args(argv)
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    try:
        if args.command == "verify":
            result: object = verify_dcp_checkpoint(args.url, **options)
        else:
            result = {"deleted": delete_dcp_checkpoint(args.url, **options)}
    except StoreError as exc:
        print(f"{parser.prog} {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
