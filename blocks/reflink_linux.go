package blocks

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// reflink makes dst a copy-on-write clone of src with the FICLONE ioctl
// and returns it open. It returns an error wrapping errors.ErrUnsupported
// when the filesystem cannot clone (ext4, tmpfs, overlayfs: EOPNOTSUPP,
// EINVAL, EXDEV, ENOTTY).
func reflink(src *os.File, dst string) (*os.File, error) {
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	err = unix.IoctlFileClone(int(out.Fd()), int(src.Fd()))
	if err == nil {
		err = out.Sync()
	}
	if err != nil {
		out.Close()
		os.Remove(dst)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("reflink %s: %w (%v)", src.Name(), errors.ErrUnsupported, err)
		}
		return nil, fmt.Errorf("reflink %s: %w", src.Name(), err)
	}
	return out, nil
}
