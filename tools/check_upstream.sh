#!/usr/bin/env bash
# Install owl2 into a throwaway venv and run the test suite there; print the versions and the result.
#
#   tools/check_upstream.sh                  the newest release of every dependency, ignoring setup.cfg's
#                                            bounds and this machine's pip configuration (its caps, its
#                                            local mirrors): what a user installing next month will meet
#   tools/check_upstream.sh --window         the newest releases inside setup.cfg's bounds, as `pip install
#                                            -e ".[dev]"` resolves them on this machine today
#   tools/check_upstream.sh --window --write-lock
#                                            the same, and on a green suite writes requirements/lock.txt,
#                                            the lock that `make env` and CI install from (`make lock`)
#
# Options: --keep DIR (build the venv in DIR and keep it), --python PY (default python3), and after `--`,
# arguments for pytest (default -q). Exit status: pytest's (5, no tests collected, becomes 1), or 3 when
# the install fails.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

mode=newest write_lock=0 keep="" python=python3 pytest_args=(-q)
while [ $# -gt 0 ]; do
  case "$1" in
    --window) mode=window ;;
    --write-lock) write_lock=1 ;;
    --keep) keep="$2"; shift ;;
    --python) python="$2"; shift ;;
    --) shift; pytest_args=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check_upstream: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$write_lock" = 1 ] && [ "$mode" != window ]; then
  echo "check_upstream: --write-lock needs --window: the lock must lie inside setup.cfg's bounds" >&2
  exit 2
fi

venv=${keep:-$(mktemp -d -t owl2-upstream.XXXXXX)}
[ -z "$keep" ] && trap 'rm -rf "$venv"' EXIT
echo "== $mode: a fresh venv in $venv"
"$python" -m venv "$venv" || exit 3
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if [ "$mode" = newest ]; then
  # No pip configuration file: neither this machine's version caps nor its local mirrors apply.
  export PIP_CONFIG_FILE=/dev/null
  "${pip[@]}" install -q --upgrade pip || exit 3
  # Every dependency owl2 declares (runtime and dev), by name only: the newest release of each.
  mapfile -t names < <("$venv/bin/python" - <<'PY'
import configparser, re
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["dev"].splitlines()
for line in lines:
    if line.strip():
        print(re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0])
PY
)
  "${pip[@]}" install -q --upgrade "${names[@]}" || exit 3
  "${pip[@]}" install -q --no-deps -e "$repo" || exit 3
else
  "${pip[@]}" install -q -e "$repo[dev]" || exit 3
fi

echo "== versions"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md, platform
print(f"python {platform.python_version()} on {platform.machine()}")
for name in ("torch", "torchvision", "transformers", "timm", "deepspeed", "tokenizers", "safetensors",
             "huggingface-hub", "pillow", "numpy"):
    print(f"  {name:16s} {md.version(name)}")
PY

echo "== pytest ${pytest_args[*]}"
(cd "$repo" && "$venv/bin/python" -m pytest "${pytest_args[@]}" -p no:cacheprovider)
rc=$?
[ "$rc" -eq 5 ] && { echo "pytest collected no tests: that is a failure"; rc=1; }
if [ "$rc" -eq 0 ]; then echo "== upstream check ($mode): PASSED"; else echo "== upstream check ($mode): FAILED (pytest exit $rc)"; fi

if [ "$write_lock" = 1 ] && [ "$rc" -eq 0 ]; then
  lock=requirements/lock.txt
  mkdir -p "$(dirname "$lock")"
  {
    echo "# The environment the whole suite last passed in. Written by tools/check_upstream.sh --window --write-lock"
    echo "# (make lock); never edit by hand. Installed as constraints: pip install -c $lock -e \".[dev]\""
    echo "# $(date -u +%Y-%m-%d), $("$venv/bin/python" -c 'import platform; print("Python", platform.python_version(), platform.system(), platform.machine())')"
    "${pip[@]}" freeze --exclude-editable | grep -v '^owl2'
  } > "$lock.tmp" && mv "$lock.tmp" "$lock"
  echo "== wrote $lock"
fi
exit "$rc"
