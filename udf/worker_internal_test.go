package udf

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadFrame: the host's decoder of a sandbox process's replies never
// panics, never returns more than its bound, and reads back what
// writeFrame wrote.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeFrame(w, opOutput, []byte("out"), []byte("put"))
	w.Flush()
	f.Add(buf.Bytes())
	f.Add([]byte{opOK, 0, 0, 0, 0})
	f.Add([]byte{opModuleErr, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 64
		op, b, err := readFrame(bufio.NewReader(bytes.NewReader(data)), max)
		if err != nil {
			return
		}
		if len(b) > max || len(data) < 5+len(b) || op != data[0] || !bytes.Equal(b, data[5:5+len(b)]) {
			t.Fatalf("readFrame(%x) = %q, %x", data, op, b)
		}
		var again bytes.Buffer
		w := bufio.NewWriter(&again)
		if err := writeFrame(w, op, b); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if !bytes.Equal(again.Bytes(), data[:5+len(b)]) {
			t.Fatalf("writeFrame(readFrame(%x)) = %x", data, again.Bytes())
		}
	})
}
