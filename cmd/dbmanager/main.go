// Command dbmanager is the single writer of one teatree model. See package
// dbmanager; flags are listed by `dbmanager --help`.
package main

import "github.com/teatree/teatree/internal/app"

func main() { app.Main("dbmanager", app.DBManager) }
