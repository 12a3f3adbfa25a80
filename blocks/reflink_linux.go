package blocks

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// reflink makes dst a copy-on-write clone of src with the FICLONE ioctl.
// It returns an error wrapping errors.ErrUnsupported when the filesystem
// cannot clone (ext4, tmpfs, overlayfs: EOPNOTSUPP, EINVAL, EXDEV, ENOTTY).
func reflink(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("reflink %s: %w (%v)", src, errors.ErrUnsupported, err)
		}
		return fmt.Errorf("reflink %s: %w", src, err)
	}
	return nil
}
