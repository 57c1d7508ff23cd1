#!/usr/bin/env bash
# Source this from a recipe after declaring its variables with defaults:
#   stage=0; nj=4; use_mel=true; . utils/parse_options.sh
# Every "--some-name value" or "--some_name=value" before the first non-option argument overrides the
# already-declared shell variable some_name; parsing stops at that argument or at "--", and the rest is left
# in "$@" (a script that takes no arguments must refuse a non-empty "$@" itself, as egs/TEMPLATE/tokens.sh
# does). "--config FILE" sources FILE first; "--help" prints $help_message. As in Kaldi, a variable whose
# default is true or false takes only true or false; here also a variable whose default is an integer takes
# only an integer (e.g. --stage -1). Unknown names, missing values and such bad values are errors (exit 2,
# "fix the command") that name the option.

__po_usage() { echo "${help_message:-usage: $0 [--name value ...] args}" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) __po_usage; exit 0 ;;
    --config) [ $# -ge 2 ] || { echo "$0: --config needs a file" >&2; exit 2; }
              [ -f "$2" ] || { echo "$0: --config $2: no such file" >&2; exit 2; }
              . "$2"; shift 2 ;;
    --config=*) __po_f="${1#--config=}"; [ -f "$__po_f" ] || { echo "$0: --config $__po_f: no such file" >&2; exit 2; }
              . "$__po_f"; shift ;;
    --) shift; break ;;
    --*)
      __po_arg="${1#--}"
      if [[ "$__po_arg" == *=* ]]; then __po_val="${__po_arg#*=}"; __po_arg="${__po_arg%%=*}"; shift
      else
        [ $# -ge 2 ] || { echo "$0: option --$__po_arg needs a value" >&2; exit 2; }
        __po_val="$2"; shift 2
      fi
      __po_name="${__po_arg//-/_}"
      if [[ ! "$__po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!__po_name+set}" ]; then
        echo "$0: unknown option --$__po_arg (no variable '$__po_name' in this script)" >&2; __po_usage; exit 2
      fi
      __po_old="${!__po_name}"
      if [ "$__po_old" = true ] || [ "$__po_old" = false ]; then
        if [ "$__po_val" != true ] && [ "$__po_val" != false ]; then
          echo "$0: --$__po_arg: expected true or false, got '$__po_val'" >&2; exit 2
        fi
      elif [[ "$__po_old" =~ ^-?[0-9]+$ ]] && [[ ! "$__po_val" =~ ^-?[0-9]+$ ]]; then
        echo "$0: --$__po_arg: expected an integer, got '$__po_val'" >&2; exit 2
      fi
      printf -v "$__po_name" '%s' "$__po_val" ;;
    *) break ;;
  esac
done
unset __po_arg __po_val __po_name __po_f __po_old
