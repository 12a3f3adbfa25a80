// Command delayclass is an example teatree user function, a map, and the
// module of the benchmark (teabench scenario 6): it adds a delay class to
// every row of the flights (package class). Params (optional): column
// names the delay column in minutes (default delay), as the new string
// column (default delay_class).
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o delayclass.wasm ./udf/examples/delayclass
package main

import (
	"github.com/teatree/teatree/udf/examples/delayclass/class"
	"github.com/teatree/teatree/udf/sdk"
)

func init() { sdk.Handle(class.Map) }

func main() {}
