// Command dispatcher supervises teatree's db-managers. See package
// dispatcher; flags are listed by `dispatcher --help`.
package main

import "github.com/teatree/teatree/internal/app"

func main() { app.Main("dispatcher", app.Dispatcher) }
