//go:build !linux

package blocks

import (
	"errors"
	"fmt"
)

func reflink(src, dst string) error {
	return fmt.Errorf("reflink %s: %w", src, errors.ErrUnsupported)
}
