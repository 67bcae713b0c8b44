# Debian's chromium for the browser tests (tests/frontend_harness.py drives /usr/bin/chromium with Playwright).
# Sourced by scripts/setup.sh; SWD_CHROMIUM overrides the path (for the tests of this decision).

# present: nothing to do; install: missing, and we are root with apt-get; missing: tell the user the command.
chromium_plan() {
  if [ -x "${SWD_CHROMIUM:-/usr/bin/chromium}" ]; then
    echo present
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo install
  else
    echo missing
  fi
}

chromium_setup() {
  case "$(chromium_plan)" in
    install)
      printf '\033[1m==> %s\033[0m\n' "installing Debian's chromium for the browser tests: apt-get update && apt-get install -y chromium" >&2
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 \
        || { printf '\033[31merror:\033[0m %s\n' "apt-get could not install chromium (see above)" >&2; return 1; } ;;
    missing)
      printf '\033[33mnote:\033[0m %s\n' "the browser tests of make test need Debian's chromium at /usr/bin/chromium; install it with: sudo apt-get update && sudo apt-get install -y chromium" >&2 ;;
  esac
}
