package model

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxExcerpt is the most bytes of one piece of outside input (a key, a
// value, a name) that an error message quotes.
const MaxExcerpt = 64

// MaxErrorText is the most bytes of a library's error message (encoding/json,
// DuckDB, arrow-go) that teatree repeats: such messages can echo outside
// input at any length.
const MaxErrorText = 512

// Quote is the one rule for quoting outside input in an error message: s
// Go-quoted (control characters and invalid UTF-8 escaped), cut at
// MaxExcerpt bytes on a rune boundary, and, when cut, followed by "…" and
// the full length. The result is at most about 4×MaxExcerpt+24 bytes
// however long s is.
func Quote(s string) string {
	if len(s) <= MaxExcerpt {
		return strconv.Quote(s)
	}
	return strconv.Quote(cut(s, MaxExcerpt)) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// Excerpt is Quote for a message rather than a value: text with every
// control character and invalid byte escaped and new lines made spaces, so
// that the result is one line, cut (with "…") where the escaped text would
// pass limit bytes; no surrounding quotes, and quotes left as they are.
func Excerpt(text string, limit int) string {
	b := make([]byte, 0, min(len(text), limit)+8)
	for i, w := 0, 0; i < len(text); i += w {
		r, n := utf8.DecodeRuneInString(text[i:])
		w = n
		var piece string
		switch {
		case r == utf8.RuneError && n == 1:
			piece = fmt.Sprintf(`\x%02x`, text[i])
		case r == '\n':
			piece = " "
		case !strconv.IsPrint(r) && r != ' ':
			q := strconv.QuoteRune(r)
			piece = q[1 : len(q)-1]
		default:
			piece = text[i : i+n]
		}
		if len(b)+len(piece) > limit {
			return string(b) + "…"
		}
		b = append(b, piece...)
	}
	return string(b)
}

// cut returns the longest prefix of s of at most n bytes that ends on a
// rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Shorten returns err with its message passed through Excerpt (at most
// MaxErrorText bytes, one line); errors.Is and errors.As still see err.
// Use it on errors from libraries that may echo outside input. Shorten(nil)
// is nil.
func Shorten(err error) error {
	if err == nil {
		return nil
	}
	return shortError{err}
}

type shortError struct{ err error }

func (e shortError) Error() string { return Excerpt(e.err.Error(), MaxErrorText) }
func (e shortError) Unwrap() error { return e.err }
