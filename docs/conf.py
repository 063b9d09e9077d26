"""Sphinx configuration of the pyg-ple documentation.

Why Sphinx (and not mkdocs-material + mkdocstrings): the docstrings of pyg-ple already use Sphinx roles
(``:class:``, ``:func:``, ``:mod:``) and PyG-style ``Args:`` sections, which autodoc + napoleon render as they are;
PyG, PyTorch and timm document their APIs the same way, so cross-references to them read alike. The prose pages are
Markdown (MyST), so that they can take the benchmark reports under ``benchmarks/results/`` as they are, through MyST's
``{include}``: the tables on the benchmark pages are the results files, never retyped. The theme is furo.

Build: ``pip install -e ".[docs]" && sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""
import argparse
import os
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyg_ple  # noqa: E402

project = 'pyg-ple'
author = 'the pyg-ple authors'
copyright = '2026, the pyg-ple authors'
release = pyg_ple.__version__
version = '.'.join(release.split('.')[:2])

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
    'sphinx.ext.intersphinx',
    'myst_parser',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build']
highlight_language = 'none'
root_doc = 'index'

# Markdown: ```{directive} fences, $...$ math, and anchors for the headings of the included reports.
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3
# The included reports and the screening log were written as stand-alone Markdown files: their heading levels and
# their relative file mentions are theirs, not the site's.
suppress_warnings = ['myst.header', 'myst.xref_missing']

# API reference. The docstrings are edited by several people at once: unresolved cross-references (torch, PyG types in
# signatures) must not fail the build, so the reference is not nitpicky; every other warning does fail it (-W in CI).
nitpicky = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_default_options = {'show-inheritance': False}
autodoc_inherit_docstrings = False
# Optional dependencies of modules that the reference may document (molecule loaders, Hugging Face): the docs build
# needs none of them installed.
autodoc_mock_imports = ['rdkit', 'ogb', 'transformers']
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
intersphinx_mapping = {}  # the build runs offline

html_theme = 'furo'
html_title = f'pyg-ple {release}'
html_static_path = []


class CliHelp(Directive):
    """``.. cli-help:: bench``: the ``--help`` text of a ``pyg-ple`` command, generated at build time from
    :func:`pyg_ple.bench.cli.build_parser`, so that the CLI reference is always the parser's own. Rendered as a literal
    block (no reST parsing of help strings, so an edit to a help text cannot break the build)."""
    optional_arguments = 1
    has_content = False

    def run(self):
        from pyg_ple.bench.cli import build_parser
        parser = build_parser()
        parser.prog = 'pyg-ple'
        if self.arguments:
            name = self.arguments[0]
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[name]
            parser.prog = f'pyg-ple {name}'
        os.environ.setdefault('COLUMNS', '100')
        text = parser.format_help()
        block = nodes.literal_block(text, text)
        block['language'] = 'text'
        return [block]


def setup(app):
    directives.register_directive('cli-help', CliHelp)
