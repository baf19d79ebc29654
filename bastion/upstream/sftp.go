package upstream

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"gatehouse/bastion/internal/sanitize"
)

// SFTP packet types (draft-ietf-secsh-filexfer-02, the version 3 that
// OpenSSH speaks).
const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpOpen          = 3
	fxpClose         = 4
	fxpRead          = 5
	fxpWrite         = 6
	fxpLstat         = 7
	fxpFstat         = 8
	fxpSetstat       = 9
	fxpFsetstat      = 10
	fxpOpendir       = 11
	fxpReaddir       = 12
	fxpRemove        = 13
	fxpMkdir         = 14
	fxpRmdir         = 15
	fxpRealpath      = 16
	fxpStat          = 17
	fxpRename        = 18
	fxpReadlink      = 19
	fxpSymlink       = 20
	fxpStatus        = 101
	fxpHandle        = 102
	fxpData          = 103
	fxpName          = 104
	fxpAttrs         = 105
	fxpExtended      = 200
	fxpExtendedReply = 201
)

// SSH_FX_OP_UNSUPPORTED, the status the auditor answers a refused request
// with (the one sftp-server gives for an extension it does not know, so
// clients already handle it).
const fxOpUnsupported = 8

// ATTRS flag bits (draft-02 §5).
const (
	attrSize        = 0x1
	attrUIDGID      = 0x2
	attrPermissions = 0x4
	attrACModTime   = 0x8
	attrExtended    = 0x80000000
)

// Limits that keep a hostile peer from making the auditor allocate
// without bound. OpenSSH's sftp-server refuses packets over 256 KiB and
// allows 100 open handles; these are looser so that no legitimate
// session trips them, and tripping them closes the channel (fail closed:
// file operations that cannot be audited are not relayed).
const (
	maxSFTPPacket  = 1 << 20
	sftpPrefixCap  = 16 << 10 // bytes of each packet held and parsed before it is relayed; data beyond is relayed unparsed
	maxSFTPPending = 4096
	maxSFTPHandles = 1024
	maxSFTPPath    = 4096
	maxSFTPHandle  = 256 // OpenSSH's handles are 4 bytes
	maxSFTPRanges  = 32  // write ranges kept per handle before neighbours are merged
	maxSFTPIDs     = 64  // uids/gids listed in a users-groups-by-id event
)

// ErrSFTPViolation wraps an sftp stream the auditor refuses to relay: a
// request id reused while outstanding, a malformed packet, a limit
// exceeded. The channel is closed (the rest of the connection goes on)
// and the recording says why.
var ErrSFTPViolation = errors.New("sftp protocol violation")

// DefaultSFTPExtensions are the SFTP extensions the auditor understands
// and records with all their arguments; they are always relayed. Others
// are refused unless RelayOptions.SFTPExtensions allows them.
var DefaultSFTPExtensions = []string{
	"posix-rename@openssh.com", "hardlink@openssh.com", "fsync@openssh.com",
	"lsetstat@openssh.com", "statvfs@openssh.com", "fstatvfs@openssh.com",
	"copy-data", "home-directory", "expand-path@openssh.com",
	"limits@openssh.com", "users-groups-by-id@openssh.com",
}

// sftpSplitter cuts one direction of an sftp stream into packets. It
// holds back the first sftpPrefixCap bytes of each packet (all of a
// smaller one) until head has parsed them and decided whether the packet
// is relayed, so nothing reaches the other side before it is understood;
// the rest of a relayed packet (WRITE or DATA payload) streams through.
type sftpSplitter struct {
	hdr     [4]byte
	hn      int
	length  uint32 // body length of the current packet
	got     uint32 // body bytes consumed
	prefix  []byte // body bytes held until decided
	decided bool
	pass    bool // decided to relay the current packet
}

// mid reports whether part of a relayed packet has been passed on and
// its end has not: replies the auditor makes must wait for the boundary.
func (s *sftpSplitter) mid() bool {
	return s.hn == 4 && s.decided && s.pass && s.got < s.length
}

// feed consumes p and appends the bytes to relay to out. head is called
// once per packet with its held prefix (type byte first) and its full
// body length, and says whether to relay it. boundary is the length of
// out at the last packet boundary, -1 if the stream never was at one.
func (s *sftpSplitter) feed(p, out []byte, head func(body []byte, length uint32) (bool, error)) (_ []byte, boundary int, _ error) {
	if s.mid() {
		boundary = -1
	}
	for len(p) > 0 {
		if s.hn < 4 {
			n := copy(s.hdr[s.hn:], p)
			s.hn += n
			p = p[n:]
			if s.hn < 4 {
				break
			}
			s.length = binary.BigEndian.Uint32(s.hdr[:])
			if s.length == 0 || s.length > maxSFTPPacket {
				return out, boundary, fmt.Errorf("%w: packet length %d outside 1..%d", ErrSFTPViolation, s.length, maxSFTPPacket)
			}
			s.got, s.prefix, s.decided, s.pass = 0, s.prefix[:0], false, false
			continue
		}
		if !s.decided {
			want := int(min(s.length, sftpPrefixCap))
			k := min(want-len(s.prefix), len(p))
			s.prefix = append(s.prefix, p[:k]...)
			s.got += uint32(k)
			p = p[k:]
			if len(s.prefix) < want {
				break
			}
			pass, err := head(s.prefix, s.length)
			if err != nil {
				return out, boundary, err
			}
			s.decided, s.pass = true, pass
			if pass {
				out = append(append(out, s.hdr[:]...), s.prefix...)
			}
		} else {
			take := min(uint32(len(p)), s.length-s.got)
			if s.pass {
				out = append(out, p[:take]...)
			}
			s.got += take
			p = p[take:]
		}
		if s.got == s.length {
			s.hn = 0
			boundary = len(out)
		}
	}
	return out, boundary, nil
}

// sftpReq is a client request awaiting its response.
type sftpReq struct {
	id     uint32
	op     string
	args   map[string]any // as sent, for the event
	handle string         // the handle operated on, raw
	off, n uint64         // READ/WRITE offset and length
	sent   bool           // relayed to the target
}

// sftpFile is an open handle and what was done through it.
type sftpFile struct {
	path, flags   string
	dir           bool
	read, written uint64
	reads, writes uint64 // requests answered ok
	failedWrites  uint64
	entries       uint64      // READDIR names
	ranges        [][2]uint64 // written [start, end) ranges, merged
	approx        bool        // ranges were merged across gaps to stay bounded
}

// addRange records a successful write of n bytes at off.
func (f *sftpFile) addRange(off, n uint64) {
	if n == 0 {
		return
	}
	end := off + n
	if end < off {
		end = ^uint64(0)
	}
	i, _ := slices.BinarySearchFunc(f.ranges, off, func(r [2]uint64, o uint64) int {
		switch {
		case r[0] < o:
			return -1
		case r[0] > o:
			return 1
		}
		return 0
	})
	f.ranges = slices.Insert(f.ranges, i, [2]uint64{off, end})
	// Merge overlapping or touching neighbours.
	out := f.ranges[:1]
	for _, r := range f.ranges[1:] {
		last := &out[len(out)-1]
		if r[0] <= last[1] {
			last[1] = max(last[1], r[1])
		} else {
			out = append(out, r)
		}
	}
	f.ranges = out
	for len(f.ranges) > maxSFTPRanges {
		// Merge the pair with the smallest gap: the summary stays a
		// covering set, marked approximate.
		best := 0
		for j := 1; j < len(f.ranges)-1; j++ {
			if f.ranges[j+1][0]-f.ranges[j][1] < f.ranges[best+1][0]-f.ranges[best][1] {
				best = j
			}
		}
		f.ranges[best][1] = f.ranges[best+1][1]
		f.ranges = slices.Delete(f.ranges, best+1, best+2)
		f.approx = true
	}
}

// sftpAudit follows both directions of an sftp subsystem channel. Every
// request is parsed before it is relayed; each operation becomes one
// event with its arguments and result (reads, writes and directory
// listings are summarised per handle at close). A request it does not
// understand is answered OP_UNSUPPORTED without reaching the target; one
// that breaks the protocol closes the channel. Its methods are safe for
// the two directions' goroutines.
type sftpAudit struct {
	emit     func(fields map[string]any) error
	allowExt map[string]bool // unknown extensions relayed anyway

	mu       sync.Mutex
	client   sftpSplitter // admin → target
	server   sftpSplitter // target → admin
	pending  map[uint32]*sftpReq
	handles  map[string]*sftpFile
	unsent   []*sftpReq // parsed from the chunk being relayed
	replies  []byte     // answers the auditor makes itself, for the admin
	finished bool
	toUp     []byte // relay buffers, reused
	toDown   []byte

	// Writes to the admin: target packets and the auditor's own replies
	// must not interleave inside a packet.
	downMu     sync.Mutex
	downMid    bool   // a target packet is partly written
	downQueued []byte // replies waiting for its end
}

func newSFTPAudit(emit func(map[string]any) error, allow []string) *sftpAudit {
	a := &sftpAudit{emit: emit, allowExt: map[string]bool{}, pending: map[uint32]*sftpReq{}, handles: map[string]*sftpFile{}}
	for _, e := range allow {
		a.allowExt[e] = true
	}
	return a
}

// fromClient parses bytes the admin sent. It returns the bytes to relay
// to the target and the replies to send the admin (both valid until the
// next call). An error wraps ErrSFTPViolation or is the emit error.
func (a *sftpAudit) fromClient(p []byte) (toUp, replies []byte, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.finished {
		return nil, nil, nil
	}
	a.unsent, a.replies = a.unsent[:0], a.replies[:0]
	a.toUp, _, err = a.client.feed(p, a.toUp[:0], a.request)
	if err != nil {
		return nil, nil, a.violation(err)
	}
	return a.toUp, a.replies, nil
}

// sent marks the requests of the last fromClient chunk as relayed.
func (a *sftpAudit) sent() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, q := range a.unsent {
		q.sent = true
	}
	a.unsent = a.unsent[:0]
}

// fromServer parses bytes the target sent and returns those to relay to
// the admin, with the length of their prefix that ends on a packet
// boundary (-1: none).
func (a *sftpAudit) fromServer(p []byte) (toDown []byte, boundary int, mid bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.finished {
		return nil, -1, false, nil
	}
	a.toDown, boundary, err = a.server.feed(p, a.toDown[:0], a.response)
	if err != nil {
		return nil, -1, false, a.violation(err)
	}
	return a.toDown, boundary, a.server.mid(), nil
}

// violation records why the channel is being closed; an
// ErrSFTPViolation is returned as is (the event is best effort: a
// recording failure is reported by the caller's next event anyway).
func (a *sftpAudit) violation(err error) error {
	if !errors.Is(err, ErrSFTPViolation) {
		return err
	}
	if eerr := a.emit(map[string]any{"op": "violation", "result": "channel closed", "reason": sanitize.String(err.Error(), 300)}); eerr != nil {
		return eerr // the recording failing ends the session, a stronger end
	}
	return err
}

// finish reports what the channel's end left open: handles (with their
// summaries) and requests never answered, so nothing done through the
// channel is missing from the recording.
func (a *sftpAudit) finish() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.finished = true
	var errs []error
	ids := make([]uint32, 0, len(a.pending))
	for id := range a.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		q := a.pending[id]
		delete(a.pending, id)
		result := "no reply: channel closed"
		if !q.sent {
			result = "not relayed: channel closed"
		}
		switch q.op {
		case "read", "write":
			q.args["offset"], q.args["length"] = q.off, q.n
		}
		errs = append(errs, a.event(q, result, nil))
	}
	hs := make([]string, 0, len(a.handles))
	for h := range a.handles {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	for _, h := range hs {
		errs = append(errs, a.emit(a.closeFields(h, a.handles[h], "channel closed")))
		delete(a.handles, h)
	}
	return errors.Join(errs...)
}

// sftpReader decodes SFTP wire fields; the first short read sets err.
type sftpReader struct {
	b   []byte
	err error
}

func (r *sftpReader) fail(what string) {
	if r.err == nil {
		r.err = errors.New(what)
	}
}

func (r *sftpReader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.fail("truncated uint32")
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *sftpReader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail("truncated uint64")
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *sftpReader) bytes() []byte {
	n := r.u32()
	if r.err != nil || uint64(n) > uint64(len(r.b)) {
		r.fail("string overruns the packet")
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func (r *sftpReader) str() string { return string(r.bytes()) }

// path reads a path, bounded, sanitized for the event.
func (r *sftpReader) path() string {
	p := r.bytes()
	if len(p) > maxSFTPPath {
		r.fail("path longer than " + strconv.Itoa(maxSFTPPath) + " bytes")
		return ""
	}
	return sanitize.String(string(p), 0)
}

// handle reads a handle, bounded.
func (r *sftpReader) handle() string {
	h := r.bytes()
	if len(h) > maxSFTPHandle {
		r.fail("handle longer than " + strconv.Itoa(maxSFTPHandle) + " bytes")
	}
	return string(h)
}

// attrs reads an ATTRS structure into event fields (mode in octal, as
// chmod takes it); nil when no attribute is set.
func (r *sftpReader) attrs() map[string]any {
	flags := r.u32()
	if r.err != nil || flags == 0 {
		return nil
	}
	m := map[string]any{}
	if flags&attrSize != 0 {
		m["size"] = r.u64()
	}
	if flags&attrUIDGID != 0 {
		m["uid"], m["gid"] = r.u32(), r.u32()
	}
	if flags&attrPermissions != 0 {
		m["mode"] = fmt.Sprintf("%04o", r.u32())
	}
	if flags&attrACModTime != 0 {
		m["atime"], m["mtime"] = r.u32(), r.u32()
	}
	if flags&attrExtended != 0 {
		n := r.u32()
		if uint64(n)*8 > uint64(len(r.b)) {
			r.fail("extended attribute count overruns the packet")
			return m
		}
		ext := map[string]any{}
		for range n {
			k, v := r.bytes(), r.bytes()
			ext[sanitize.String(string(k), 200)] = sanitize.String(string(v), 1000)
		}
		m["extended"] = ext
	}
	if rest := flags &^ (attrSize | attrUIDGID | attrPermissions | attrACModTime | attrExtended); rest != 0 {
		// Bits draft-02 does not define: the target ignores or refuses
		// them; say they were there.
		m["unknown_flags"] = fmt.Sprintf("0x%x", rest)
	}
	return m
}

// hexHandle renders a handle for an event: handles are the target's
// opaque bytes.
func hexHandle(h string) string { return hex.EncodeToString([]byte(h)) }

// request parses one client packet and decides whether it is relayed.
func (a *sftpAudit) request(body []byte, length uint32) (bool, error) {
	typ := body[0]
	r := &sftpReader{b: body[1:]}
	if typ == fxpInit {
		return true, nil
	}
	id := r.u32()
	if r.err != nil {
		return false, fmt.Errorf("%w: packet type %d without a request id", ErrSFTPViolation, typ)
	}
	if old, dup := a.pending[id]; dup {
		return false, fmt.Errorf("%w: request id %d reused while the %s request with that id is outstanding", ErrSFTPViolation, id, old.op)
	}
	q := &sftpReq{id: id, args: map[string]any{}}
	arg := func(k string, v any) {
		if v != nil && v != "" {
			q.args[k] = v
		}
	}
	switch typ {
	case fxpOpen:
		q.op = "open"
		arg("path", r.path())
		arg("flags", openFlags(r.u32()))
		if at := r.attrs(); at != nil {
			arg("attrs", at)
		}
	case fxpOpendir:
		q.op = "opendir"
		arg("path", r.path())
	case fxpClose, fxpFstat, fxpReaddir:
		q.op = map[byte]string{fxpClose: "close", fxpFstat: "fstat", fxpReaddir: "readdir"}[typ]
		q.handle = r.handle()
	case fxpRead:
		q.op, q.handle, q.off, q.n = "read", r.handle(), r.u64(), uint64(r.u32())
	case fxpWrite:
		q.op, q.handle, q.off = "write", r.handle(), r.u64()
		// The data may lie beyond the held prefix: its length field is
		// enough, checked against the packet's real size.
		n := r.u32()
		if hdr := uint64(1 + 4 + 4 + len(q.handle) + 8 + 4); r.err == nil && uint64(n) > uint64(length)-min(hdr, uint64(length)) {
			r.fail("write length beyond the packet")
		}
		q.n = uint64(n)
	case fxpFsetstat:
		q.op, q.handle = "fsetstat", r.handle()
		arg("attrs", r.attrs())
	case fxpSetstat:
		q.op = "setstat"
		arg("path", r.path())
		arg("attrs", r.attrs())
	case fxpMkdir:
		q.op = "mkdir"
		arg("path", r.path())
		if at := r.attrs(); at != nil {
			arg("attrs", at)
		}
	case fxpRemove, fxpRmdir, fxpRealpath, fxpStat, fxpLstat, fxpReadlink:
		q.op = sftpOpName[typ]
		arg("path", r.path())
	case fxpRename:
		q.op = "rename"
		arg("path", r.path())
		arg("target", r.path())
	case fxpSymlink:
		// draft-02 says linkpath then targetpath; OpenSSH (and so every
		// client written against it) sends them the other way round.
		// Recorded in wire order.
		q.op = "symlink"
		arg("path", r.path())
		arg("target", r.path())
	case fxpExtended:
		name := r.str()
		q.op = "extended"
		q.args["name"] = sanitize.String(name, 200)
		if r.err == nil && !a.extension(q, name, r, length) {
			return false, a.refuse(q, "extension not in [bastion] sftp_extensions")
		}
	default:
		q.op = "type " + strconv.Itoa(int(typ))
		return false, a.refuse(q, "packet type not in SFTP version 3")
	}
	if r.err != nil {
		return false, fmt.Errorf("%w: malformed %s request (%d bytes): %v", ErrSFTPViolation, q.op, length, r.err)
	}
	if len(a.pending) >= maxSFTPPending {
		return false, fmt.Errorf("%w: more than %d requests outstanding", ErrSFTPViolation, maxSFTPPending)
	}
	a.pending[id] = q
	a.unsent = append(a.unsent, q)
	return true, nil
}

// extension parses the arguments of a known extended request into q; it
// returns false for an extension that is neither known nor allowed.
func (a *sftpAudit) extension(q *sftpReq, name string, r *sftpReader, length uint32) bool {
	switch name {
	case "posix-rename@openssh.com", "hardlink@openssh.com":
		q.op = strings.TrimSuffix(name, "@openssh.com")
		q.args["path"], q.args["target"] = r.path(), r.path()
	case "fsync@openssh.com", "fstatvfs@openssh.com":
		q.op = strings.TrimSuffix(name, "@openssh.com")
		q.handle = r.handle()
	case "lsetstat@openssh.com":
		q.op = "lsetstat"
		q.args["path"] = r.path()
		if at := r.attrs(); at != nil {
			q.args["attrs"] = at
		}
	case "statvfs@openssh.com", "expand-path@openssh.com":
		q.op = strings.TrimSuffix(name, "@openssh.com")
		q.args["path"] = r.path()
	case "copy-data":
		q.op = "copy-data"
		q.handle = r.handle()
		q.args["read_offset"], q.args["length"] = r.u64(), r.u64()
		wh := r.handle()
		q.args["write_handle"], q.args["write_offset"] = hexHandle(wh), r.u64()
		if f := a.handles[wh]; f != nil {
			q.args["write_path"] = f.path
		}
	case "home-directory":
		q.op = "home-directory"
		q.args["user"] = sanitize.String(r.str(), 200)
	case "limits@openssh.com":
		q.op = "limits"
	case "users-groups-by-id@openssh.com":
		q.op = "users-groups-by-id"
		for _, k := range []string{"uids", "gids"} {
			raw := r.bytes()
			if len(raw)%4 != 0 {
				r.fail(k + " not a list of uint32")
			}
			ids := make([]uint32, 0, min(len(raw)/4, maxSFTPIDs))
			for i := 0; i+4 <= len(raw) && len(ids) < maxSFTPIDs; i += 4 {
				ids = append(ids, binary.BigEndian.Uint32(raw[i:]))
			}
			q.args[k] = ids
			if len(raw)/4 > maxSFTPIDs {
				q.args[k+"_count"] = len(raw) / 4
			}
		}
	default:
		if !a.allowExt[name] {
			return false
		}
		// Allowed by the operator but not understood: its arguments are
		// recorded as a size only.
		q.args["bytes"] = length
	}
	return true
}

// refuse answers q with OP_UNSUPPORTED instead of relaying it, and
// records that.
func (a *sftpAudit) refuse(q *sftpReq, why string) error {
	msg := "gatehouse: " + why
	pkt := []byte{0, 0, 0, 0, fxpStatus}
	pkt = binary.BigEndian.AppendUint32(pkt, q.id)
	pkt = binary.BigEndian.AppendUint32(pkt, fxOpUnsupported)
	pkt = binary.BigEndian.AppendUint32(pkt, uint32(len(msg)))
	pkt = append(pkt, msg...)
	pkt = binary.BigEndian.AppendUint32(pkt, 0) // language tag
	binary.BigEndian.PutUint32(pkt, uint32(len(pkt)-4))
	a.replies = append(a.replies, pkt...)
	return a.event(q, "refused: "+why, nil)
}

var sftpOpName = map[byte]string{
	fxpRemove: "remove", fxpRmdir: "rmdir", fxpRealpath: "realpath",
	fxpStat: "stat", fxpLstat: "lstat", fxpReadlink: "readlink",
}

// event emits q with its result and extra fields; an operation on a
// handle names the handle's path.
func (a *sftpAudit) event(q *sftpReq, result string, extra map[string]any) error {
	f := map[string]any{"op": q.op, "id": q.id, "result": result}
	for k, v := range q.args {
		f[k] = v
	}
	if q.handle != "" || q.op == "close" || q.op == "fstat" || q.op == "readdir" || q.op == "read" || q.op == "write" {
		f["handle"] = hexHandle(q.handle)
		if h := a.handles[q.handle]; h != nil {
			f["path"] = h.path
		} else if q.op != "open" && q.op != "opendir" {
			f["unknown_handle"] = true
		}
	}
	for k, v := range extra {
		f[k] = v
	}
	return a.emit(f)
}

// closeFields summarises a handle at its close.
func (a *sftpAudit) closeFields(h string, f *sftpFile, result string) map[string]any {
	fields := map[string]any{"op": "close", "path": f.path, "handle": hexHandle(h), "result": result}
	if f.dir {
		fields["op"] = "closedir"
		fields["entries"] = f.entries
		return fields
	}
	fields["flags"] = f.flags
	fields["bytes_read"], fields["bytes_written"] = f.read, f.written
	fields["reads"], fields["writes"] = f.reads, f.writes
	if f.failedWrites > 0 {
		fields["failed_writes"] = f.failedWrites
	}
	if len(f.ranges) > 0 {
		fields["write_ranges"] = f.ranges
		if f.approx {
			fields["write_ranges_merged"] = true
		}
	}
	return fields
}

// response parses one target packet, completing the request it answers.
// Target packets are always relayed.
func (a *sftpAudit) response(body []byte, length uint32) (bool, error) {
	typ := body[0]
	r := &sftpReader{b: body[1:]}
	if typ == fxpVersion {
		v := r.u32()
		var exts []string
		for r.err == nil && len(r.b) > 0 && len(exts) < 64 {
			name, _ := r.str(), r.str()
			if r.err == nil {
				exts = append(exts, sanitize.String(name, 100))
			}
		}
		return true, a.emit(map[string]any{"op": "version", "version": v, "extensions": exts})
	}
	id := r.u32()
	q := a.pending[id]
	if r.err != nil || q == nil {
		// Answers nothing outstanding: the client drops it.
		return true, nil
	}
	delete(a.pending, id)
	result := "ok"
	extra := map[string]any{}
	var handle string
	switch typ {
	case fxpStatus:
		code := r.u32()
		result = statusName(code)
		if msg := r.str(); code != 0 && r.err == nil && msg != "" {
			extra["message"] = sanitize.String(msg, 200)
		}
	case fxpHandle:
		handle = r.handle()
		if r.err != nil {
			result = "malformed handle reply"
		}
	case fxpData:
		n := r.u32()
		if r.err != nil || uint64(n) > uint64(length) {
			result, n = "malformed data reply", 0
		}
		extra["n"] = uint64(n)
	case fxpName:
		if count := r.u32(); r.err == nil {
			extra["names"] = count
			if count >= 1 {
				if name := r.path(); r.err == nil && q.op != "readdir" {
					extra["resolved"] = name
				}
			}
		}
	case fxpAttrs, fxpExtendedReply:
	default:
		result = "unexpected reply type " + strconv.Itoa(int(typ))
	}
	f := a.handles[q.handle]
	switch q.op {
	case "read":
		if f != nil {
			if n, ok := extra["n"].(uint64); ok && typ == fxpData {
				f.read += n
				f.reads++
			}
			return true, nil
		}
		return true, a.event(q, result, map[string]any{"offset": q.off, "length": q.n})
	case "write":
		if f != nil {
			if result == "ok" {
				f.written += q.n
				f.writes++
				f.addRange(q.off, q.n)
			} else {
				f.failedWrites++
			}
			return true, nil
		}
		return true, a.event(q, result, map[string]any{"offset": q.off, "length": q.n})
	case "readdir":
		if f != nil {
			if n, ok := extra["names"].(uint32); ok {
				f.entries += uint64(n)
			}
			return true, nil
		}
		return true, a.event(q, result, nil)
	case "close":
		if f == nil {
			return true, a.event(q, result, nil)
		}
		delete(a.handles, q.handle)
		return true, a.emit(a.closeFields(q.handle, f, result))
	case "open", "opendir":
		if typ == fxpHandle && r.err == nil {
			if _, dup := a.handles[handle]; !dup && len(a.handles) >= maxSFTPHandles {
				return true, fmt.Errorf("%w: more than %d open handles", ErrSFTPViolation, maxSFTPHandles)
			}
			path, _ := q.args["path"].(string)
			flags, _ := q.args["flags"].(string)
			a.handles[handle] = &sftpFile{path: path, flags: flags, dir: q.op == "opendir"}
			extra["handle"] = hexHandle(handle)
		}
	}
	return true, a.event(q, result, extra)
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

// writeDown writes target bytes to the admin; replies queued while a
// target packet was half written go out at the packet's end (boundary).
func (a *sftpAudit) writeDown(w io.Writer, p []byte, boundary int, mid bool) error {
	a.downMu.Lock()
	defer a.downMu.Unlock()
	if boundary >= 0 {
		if _, err := w.Write(p[:boundary]); err != nil {
			return err
		}
		if len(a.downQueued) > 0 {
			if _, err := w.Write(a.downQueued); err != nil {
				return err
			}
			a.downQueued = a.downQueued[:0]
		}
		p = p[boundary:]
	}
	a.downMid = mid
	if len(p) == 0 {
		return nil
	}
	_, err := w.Write(p)
	return err
}

// reply sends the auditor's own answers to the admin, between target
// packets.
func (a *sftpAudit) reply(w io.Writer, pkts []byte) error {
	a.downMu.Lock()
	defer a.downMu.Unlock()
	if a.downMid {
		a.downQueued = append(a.downQueued, pkts...)
		return nil
	}
	_, err := w.Write(pkts)
	return err
}

// copySFTPOut relays the target's sftp stream to the admin, each packet
// parsed (and its operation recorded) before the admin sees it.
func (r *relay) copySFTPOut(a *sftpAudit, done chan<- struct{}) {
	defer r.copiers.Done()
	defer func() { done <- struct{}{} }()
	buf := make([]byte, relayBuf)
	for {
		n, rerr := r.up.Read(buf)
		if n > 0 {
			if act := r.opts.Activity; act != nil {
				act.out.Store(r.opts.Now().UnixNano())
			}
			out, boundary, mid, err := a.fromServer(buf[:n])
			if err != nil {
				r.fail(r.sftpErr(err))
				return
			}
			if err := a.writeDown(r.down, out, boundary, mid); err != nil {
				r.up.Close()
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}

// copySFTPIn relays the admin's sftp stream to the target, each packet
// parsed first: refused requests are answered here and never relayed,
// and a violation closes the channel before anything of its chunk is.
func (r *relay) copySFTPIn(a *sftpAudit) {
	buf := make([]byte, relayBuf)
	for {
		n, rerr := r.down.Read(buf)
		if n > 0 {
			if act := r.opts.Activity; act != nil {
				act.in.Store(r.opts.Now().UnixNano())
			}
			toUp, replies, err := a.fromClient(buf[:n])
			if err != nil {
				r.fail(r.sftpErr(err))
				return
			}
			if len(replies) > 0 {
				if err := a.reply(r.down, replies); err != nil {
					return
				}
			}
			if len(toUp) > 0 {
				if _, err := r.up.Write(toUp); err != nil {
					return
				}
			}
			a.sent()
		}
		if rerr != nil {
			if rerr == io.EOF {
				r.up.CloseWrite()
			}
			return
		}
	}
}

// sftpErr classifies an auditor error: a violation closes the channel,
// anything else is the recording failing.
func (r *relay) sftpErr(err error) error {
	if errors.Is(err, ErrRecording) || errors.Is(err, ErrSFTPViolation) {
		return err
	}
	return r.recErr(err)
}

// sftpEvent logs one sftp operation; its error ends the session.
func (r *relay) sftpEvent(f map[string]any) error {
	if r.rec == nil {
		return nil
	}
	f["channel"] = r.n
	return r.recErr(r.rec.Event("sftp", f))
}
