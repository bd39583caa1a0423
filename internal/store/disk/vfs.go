package disk

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// VFS is the set of mutating filesystem operations the store performs. It
// exists so tests can make any single step of a durable write fail (perkeep's
// files.VFS) and prove that the failure leaves nothing visible behind. Reads
// (Lstat, Open, ReadDir) go straight to the os package: a VFS wraps the real
// filesystem, it does not replace it.
type VFS interface {
	// MkdirAll is os.MkdirAll.
	MkdirAll(path string, perm fs.FileMode) error
	// CreateTemp is os.CreateTemp.
	CreateTemp(dir, pattern string) (File, error)
	// Rename is os.Rename.
	Rename(oldpath, newpath string) error
	// Remove is os.Remove.
	Remove(name string) error
	// SyncDir fsyncs the directory at path, making the entries created,
	// renamed or removed in it durable.
	SyncDir(path string) error
}

// File is the part of *os.File that a write needs.
type File interface {
	io.Writer
	// Name returns the file's path, as given to CreateTemp's dir.
	Name() string
	// Chmod changes the mode of the open file.
	Chmod(mode fs.FileMode) error
	// Sync flushes the file's content and metadata to stable storage.
	Sync() error
	// Close closes the file.
	Close() error
}

// OSFS is the VFS of the real filesystem.
type OSFS struct{}

var _ VFS = OSFS{}

// MkdirAll calls os.MkdirAll.
func (OSFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }

// CreateTemp calls os.CreateTemp.
func (OSFS) CreateTemp(dir, pattern string) (File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		// A nil *os.File in a non-nil File interface would defeat nil checks.
		return nil, err
	}
	return f, nil
}

// Rename calls os.Rename.
func (OSFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// Remove calls os.Remove.
func (OSFS) Remove(name string) error { return os.Remove(name) }

// SyncDir opens the directory and fsyncs it.
func (OSFS) SyncDir(path string) error {
	if runtime.GOOS == "windows" {
		// Windows cannot open a directory for fsync; NTFS journals renames.
		return nil
	}
	d, err := os.Open(filepath.Clean(path))
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	return errors.Join(serr, cerr)
}
