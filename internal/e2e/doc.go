// Package e2e runs teatree end to end through its real binaries, the way a
// user does: `teactl dev` in the foreground, then teactl commands against
// it. The binaries are built once per test run into a temporary directory.
package e2e
