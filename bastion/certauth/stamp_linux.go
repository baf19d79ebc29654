package certauth

import (
	"os"
	"syscall"
	"time"
)

// stampOf reads device, inode and ctime as well, so replaced files are noticed.
func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), uint64(st.Ino)                           //nolint:unconvert // types differ per GOARCH
		s.ctime = time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec)).UnixNano() //nolint:unconvert // int32 on 386
	}
	return s
}
