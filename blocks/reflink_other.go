//go:build !linux

package blocks

import (
	"errors"
	"fmt"
	"os"
)

func reflink(src *os.File, dst string) (*os.File, error) {
	return nil, fmt.Errorf("reflink %s: %w", src.Name(), errors.ErrUnsupported)
}
