package client

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/teatree/teatree/functions"
	"github.com/teatree/teatree/model"
)

// fileKind is what SubmitFile (teactl append) sends: the payload's format, its
// compression ("" for none) and, for JSON, whether it is newline-delimited.
type fileKind struct {
	format, compression string
	ndjson              bool
}

// ext is the canonical file extension of k: .csv, .json, .ndjson,
// .parquet or .arrow, then .gz or .zst.
func (k fileKind) ext() string {
	e := "." + k.format
	if k.ndjson {
		e = ".ndjson"
	}
	switch k.compression {
	case functions.CompressionGzip:
		e += ".gz"
	case functions.CompressionZstd:
		e += ".zst"
	}
	return e
}

// Magic numbers of the formats SubmitFile (teactl append) recognises by content.
var (
	magicGzip        = []byte{0x1f, 0x8b}
	magicZstd        = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicParquet     = []byte("PAR1")
	magicArrowFile   = []byte("ARROW1")
	magicArrowStream = []byte{0xff, 0xff, 0xff, 0xff} // the continuation marker of the first message
)

// sniffLen is how many (decompressed) bytes sniffing looks at.
const sniffLen = 64 << 10

// stagedName returns the object name under which SubmitFile (teactl append) stages
// file, and the format to send (non-empty only when given by the user).
// A name whose extension tells the format (and compression) is kept. Any
// other name (none, or an unknown extension: data, export.dat, data.gz) is
// read: gzip or zstd by their magic bytes, then within, Parquet ("PAR1"),
// Arrow IPC ("ARROW1", or a stream's continuation marker), JSON (an array
// when it starts with '[', newline-delimited when its first line is a
// whole object, else objects one after the other), else CSV when it is
// text; the staged name then gets the extension of what was found
// (data → data.csv.gz), so that the db-manager reads it as such. With
// format given (--format), only the compression is sniffed.
func stagedName(file, format string) (string, error) {
	base := filepath.Base(file)
	fromName, compression, _ := functions.PayloadKind(base)
	if fromName != "" && format == "" {
		return base, nil
	}
	k, err := sniff(file)
	if err != nil {
		return "", err
	}
	if format != "" {
		if k.compression == compression {
			return base, nil
		}
		return base + fileKind{compression: k.compression}.ext()[1:], nil
	}
	if k.format == "" {
		return "", fmt.Errorf("%w: %s is not a Parquet, Arrow IPC, CSV, JSON or NDJSON file (plain, gzip or zstd): pass --format parquet|csv|json|arrow if it is one", model.ErrInvalid, file)
	}
	if compression != "" {
		base = strings.TrimSuffix(base, filepath.Ext(base)) // data.gz → data
	}
	return base + k.ext(), nil
}

// sniff reads the start of file and tells its kind; format "" when it is
// none of the known ones.
func sniff(file string) (fileKind, error) {
	f, err := os.Open(file)
	if err != nil {
		return fileKind{}, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	defer f.Close()
	var k fileKind
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fileKind{}, err
	}
	var r io.Reader = f
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fileKind{}, fmt.Errorf("%w: %s starts like gzip but is not: %v", model.ErrInvalid, file, err)
		}
		k.compression, r = functions.CompressionGzip, zr
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return fileKind{}, err
		}
		defer zr.Close()
		k.compression, r = functions.CompressionZstd, zr
	}
	buf, err := io.ReadAll(io.LimitReader(r, sniffLen))
	if err != nil && len(buf) == 0 {
		return fileKind{}, fmt.Errorf("%w: %s: %v", model.ErrInvalid, file, err)
	}
	k.format = sniffFormat(buf)
	if buf := bytes.TrimLeft(bytes.TrimPrefix(buf, []byte("\xef\xbb\xbf")), " \t\r\n"); k.format == "json" && buf[0] == '{' {
		first, _, _ := bytes.Cut(buf, []byte("\n"))
		k.ndjson = json.Valid(first)
	}
	return k, nil
}

// sniffFormat tells the format of the (decompressed) start of a file.
func sniffFormat(b []byte) string {
	switch {
	case bytes.HasPrefix(b, magicParquet):
		return "parquet"
	case bytes.HasPrefix(b, magicArrowFile), bytes.HasPrefix(b, magicArrowStream):
		return "arrow"
	}
	text := bytes.TrimLeft(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), " \t\r\n")
	if len(text) == 0 {
		return ""
	}
	if text[0] == '[' || text[0] == '{' {
		return "json"
	}
	// CSV: text without control characters (but tab, CR, LF) whose first
	// line has at least one field. A binary format (a zip, say, "PK\x03\x04")
	// is not taken for CSV.
	if bytes.ContainsFunc(b, func(r rune) bool { return r < 0x20 && r != '\t' && r != '\r' && r != '\n' || r == 0x7f }) {
		return ""
	}
	if len(b) == sniffLen { // the cut may split a character
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1]
		}
	}
	if !utf8.Valid(b) {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), sniffLen)
	if !sc.Scan() || strings.TrimSpace(sc.Text()) == "" {
		return ""
	}
	return "csv"
}
