"""The ``pyg-ple`` command line."""
from __future__ import annotations

import argparse
import sys

from pyg_ple import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pyg-ple',
        description='Transformer attention as an explicit graph: Laplacian-diffusion attention for PyG.')
    parser.add_argument('--version', action='version', version=f'pyg-ple {__version__}')
    parser.add_subparsers(dest='command', title='commands')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
