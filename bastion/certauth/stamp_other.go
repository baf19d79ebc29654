//go:build !linux

package certauth

import "os"

// stampOf falls back to size and mtime where inode and ctime are not read.
func stampOf(fi os.FileInfo) fileStamp {
	return fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}
