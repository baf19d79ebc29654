package upstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"gatehouse/bastion/record"
)

// SFTP packet types (draft-ietf-secsh-filexfer-02, the version OpenSSH
// speaks).
const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpOpen          = 3
	fxpClose         = 4
	fxpRead          = 5
	fxpWrite         = 6
	fxpLstat         = 7
	fxpFsetstat      = 10
	fxpSetstat       = 9
	fxpOpendir       = 11
	fxpRemove        = 13
	fxpMkdir         = 14
	fxpRmdir         = 15
	fxpRealpath      = 16
	fxpStat          = 17
	fxpRename        = 18
	fxpSymlink       = 20
	fxpStatus        = 101
	fxpHandle        = 102
	fxpData          = 103
	fxpName          = 104
	fxpAttrs         = 105
	fxpExtended      = 200
	fxpExtendedReply = 201
)

// Limits that keep a hostile peer from making the auditor allocate
// without bound. OpenSSH's sftp-server refuses packets over 256 KiB and
// allows 100 open handles; these are looser so that no legitimate
// session trips them, and tripping them ends the session (fail closed:
// file operations that cannot be audited are not relayed).
const (
	maxSFTPPacket  = 1 << 20
	sftpPrefixCap  = 16 << 10 // bytes of each packet kept for parsing; data beyond is counted, not copied
	maxSFTPPending = 4096
	maxSFTPHandles = 1024
	maxSFTPPath    = 4096
)

// errSFTP marks a stream the auditor cannot follow.
var errSFTP = errors.New("sftp audit")

// sftpSplitter cuts a byte stream into SFTP packets, keeping only the
// first sftpPrefixCap bytes of each body.
type sftpSplitter struct {
	hdr    [4]byte
	hn     int
	length uint32
	got    uint32
	prefix []byte
}

// feed consumes p and calls onPacket for each completed packet with the
// kept prefix of its body (type byte first) and its full body length.
func (s *sftpSplitter) feed(p []byte, onPacket func(body []byte, length uint32) error) error {
	for len(p) > 0 {
		if s.hn < 4 {
			n := copy(s.hdr[s.hn:], p)
			s.hn += n
			p = p[n:]
			if s.hn < 4 {
				return nil
			}
			s.length = binary.BigEndian.Uint32(s.hdr[:])
			if s.length == 0 || s.length > maxSFTPPacket {
				return fmt.Errorf("%w: packet length %d outside 1..%d", errSFTP, s.length, maxSFTPPacket)
			}
			s.got = 0
			s.prefix = s.prefix[:0]
			continue
		}
		take := min(uint32(len(p)), s.length-s.got)
		if room := sftpPrefixCap - len(s.prefix); room > 0 {
			s.prefix = append(s.prefix, p[:min(int(take), room)]...)
		}
		s.got += take
		p = p[take:]
		if s.got == s.length {
			s.hn = 0
			if err := onPacket(s.prefix, s.length); err != nil {
				return err
			}
		}
	}
	return nil
}

// sftpReq is a client request awaiting its response.
type sftpReq struct {
	op, path, target, handle, flags string
	n                               uint64 // bytes a WRITE carries
}

// sftpFile is an open handle.
type sftpFile struct {
	path, flags   string
	dir           bool
	read, written uint64
}

// sftpAudit follows both directions of an sftp subsystem channel and
// reports each file operation, with its result, through emit.
type sftpAudit struct {
	emit    func(fields map[string]any) error
	client  sftpSplitter // admin → target
	server  sftpSplitter // target → admin
	pending map[uint32]*sftpReq
	handles map[string]*sftpFile
}

func newSFTPAudit(emit func(map[string]any) error) *sftpAudit {
	return &sftpAudit{emit: emit, pending: map[uint32]*sftpReq{}, handles: map[string]*sftpFile{}}
}

// fromClient parses bytes the admin sent.
func (a *sftpAudit) fromClient(p []byte) error { return a.client.feed(p, a.request) }

// fromServer parses bytes the target sent.
func (a *sftpAudit) fromServer(p []byte) error { return a.server.feed(p, a.response) }

// finish reports handles still open when the channel ends, so their byte
// counts are not lost.
func (a *sftpAudit) finish() error {
	var errs []error
	for h, f := range a.handles {
		errs = append(errs, a.emit(map[string]any{"op": "close", "path": f.path, "result": "channel closed",
			"bytes_read": f.read, "bytes_written": f.written}))
		delete(a.handles, h)
	}
	return errors.Join(errs...)
}

// sftpReader decodes SFTP wire fields from a packet prefix.
type sftpReader struct {
	b   []byte
	err error
}

func (r *sftpReader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = errSFTP
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *sftpReader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errSFTP
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *sftpReader) str() string {
	n := r.u32()
	if r.err != nil || uint64(n) > uint64(len(r.b)) {
		r.err = errSFTP
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// request handles one client packet.
func (a *sftpAudit) request(body []byte, length uint32) error {
	typ := body[0]
	r := &sftpReader{b: body[1:]}
	if typ == fxpInit {
		return nil
	}
	id := r.u32()
	var q *sftpReq
	switch typ {
	case fxpOpen:
		path := r.str()
		q = &sftpReq{op: "open", path: path, flags: openFlags(r.u32())}
	case fxpOpendir:
		q = &sftpReq{op: "opendir", path: r.str()}
	case fxpClose:
		q = &sftpReq{op: "close", handle: r.str()}
	case fxpRead:
		q = &sftpReq{op: "read", handle: r.str()}
	case fxpWrite:
		h := r.str()
		r.u64()
		// The data may lie beyond the kept prefix: its length field is
		// enough, checked against the packet's real size.
		n := r.u32()
		if r.err == nil && uint64(n) > uint64(length) {
			r.err = errSFTP
		}
		q = &sftpReq{op: "write", handle: h, n: uint64(n)}
	case fxpFsetstat:
		q = &sftpReq{op: "fsetstat", handle: r.str()}
	case fxpRemove, fxpMkdir, fxpRmdir, fxpRealpath, fxpStat, fxpLstat, fxpSetstat:
		q = &sftpReq{op: sftpOpName[typ], path: r.str()}
	case fxpRename, fxpSymlink:
		q = &sftpReq{op: sftpOpName[typ], path: r.str(), target: r.str()}
	case fxpExtended:
		switch name := r.str(); name {
		case "posix-rename@openssh.com":
			q = &sftpReq{op: "rename", path: r.str(), target: r.str()}
		case "hardlink@openssh.com":
			q = &sftpReq{op: "hardlink", path: r.str(), target: r.str()}
		default:
			q = &sftpReq{op: "extended " + record.Sanitize(name, 80)}
		}
	default:
		// READDIR, FSTAT, READLINK and unknown types change nothing
		// worth auditing; the target answers them.
		return nil
	}
	if r.err != nil {
		return fmt.Errorf("%w: malformed %s request (%d bytes)", errSFTP, q.op, length)
	}
	if len(q.path) > maxSFTPPath || len(q.target) > maxSFTPPath {
		return fmt.Errorf("%w: %s path longer than %d bytes", errSFTP, q.op, maxSFTPPath)
	}
	if _, dup := a.pending[id]; !dup && len(a.pending) >= maxSFTPPending {
		return fmt.Errorf("%w: more than %d requests outstanding", errSFTP, maxSFTPPending)
	}
	a.pending[id] = q
	return nil
}

var sftpOpName = map[byte]string{
	fxpRemove: "remove", fxpMkdir: "mkdir", fxpRmdir: "rmdir", fxpRealpath: "realpath",
	fxpStat: "stat", fxpLstat: "lstat", fxpSetstat: "setstat", fxpRename: "rename", fxpSymlink: "symlink",
}

// response handles one server packet, completing the request it answers.
func (a *sftpAudit) response(body []byte, length uint32) error {
	typ := body[0]
	if typ == fxpVersion {
		return nil
	}
	r := &sftpReader{b: body[1:]}
	id := r.u32()
	q := a.pending[id]
	if r.err != nil || q == nil {
		// Not an answer to anything audited (READDIR, FSTAT...).
		return nil
	}
	delete(a.pending, id)
	result := "ok"
	switch typ {
	case fxpStatus:
		if code := r.u32(); code != 0 {
			result = statusName(code)
		}
	case fxpHandle:
		h := r.str()
		if r.err != nil || (q.op != "open" && q.op != "opendir") {
			break
		}
		if _, dup := a.handles[h]; !dup && len(a.handles) >= maxSFTPHandles {
			return fmt.Errorf("%w: more than %d open handles", errSFTP, maxSFTPHandles)
		}
		a.handles[h] = &sftpFile{path: q.path, flags: q.flags, dir: q.op == "opendir"}
	case fxpData:
		n := r.u32()
		if f := a.handles[q.handle]; f != nil && q.op == "read" && r.err == nil && uint64(n) <= uint64(length) {
			f.read += uint64(n)
		}
		return nil
	case fxpName:
		if q.op == "realpath" {
			if r.u32() >= 1 {
				if resolved := r.str(); r.err == nil {
					q.target = resolved
				}
			}
		}
	}
	switch q.op {
	case "read":
		return nil // counted at close
	case "write":
		if f := a.handles[q.handle]; f != nil && result == "ok" {
			f.written += q.n
		}
		return nil
	case "close":
		f := a.handles[q.handle]
		if f == nil {
			return nil
		}
		delete(a.handles, q.handle)
		op := "close"
		if f.dir {
			op = "closedir"
		}
		fields := map[string]any{"op": op, "path": f.path, "result": result}
		if !f.dir {
			fields["bytes_read"], fields["bytes_written"] = f.read, f.written
		}
		return a.emit(fields)
	case "fsetstat":
		if f := a.handles[q.handle]; f != nil {
			q.path = f.path
		}
	}
	fields := map[string]any{"op": q.op, "result": result}
	if !strings.HasPrefix(q.op, "extended ") {
		fields["path"] = q.path
	}
	if q.target != "" {
		fields["target"] = q.target
	}
	if q.flags != "" {
		fields["flags"] = q.flags
	}
	return a.emit(fields)
}

// openFlags renders SSH_FXF_* bits as "read,write,create,trunc".
func openFlags(f uint32) string {
	names := []string{"read", "write", "append", "create", "trunc", "excl"}
	var out []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if rest := f &^ (1<<len(names) - 1); rest != 0 {
		out = append(out, fmt.Sprintf("0x%x", rest))
	}
	return strings.Join(out, ",")
}

// statusName names SSH_FX_* status codes.
func statusName(code uint32) string {
	names := []string{"ok", "eof", "no such file", "permission denied", "failure", "bad message",
		"no connection", "connection lost", "op unsupported"}
	if int(code) < len(names) {
		return names[code]
	}
	return fmt.Sprintf("status %d", code)
}
