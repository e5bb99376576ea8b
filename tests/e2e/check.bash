# Sourced by the e2e scripts that compare values (not run on its own:
# tests/run-all.sh runs tests/e2e/*.sh): one line per check and the tally
# the script's last line reports ("NAME e2e: N passed, M failed").

passed=0
failed=0

# check NAME EXPECTED ACTUAL
check() {
  if [[ "$2" == "$3" ]]; then
    passed=$((passed + 1))
    echo "ok   $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1: expected [$2], got [$3]"
  fi
}
