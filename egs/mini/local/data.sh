#!/usr/bin/env bash
# The mini corpus (corpus/) is in AISHELL-1's layout: AISHELL's own preparation makes its data dirs.
# The template calls this from stage 0 (never -1: the mini corpus is shipped, nothing is downloaded).
exec ../aishell/local/data.sh "$@"
