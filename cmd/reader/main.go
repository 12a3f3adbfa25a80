// Command reader is teatree's read-only query service. See package
// reader; flags are listed by `reader --help`.
package main

import "github.com/teatree/teatree/internal/app"

func main() { app.Main("reader", app.Reader) }
