package repobuild

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gatehouse/apt/deb822"
)

// descriptionMD5 is the Description-md5 of a description in deb822 Value
// form: the MD5 of the description as it stands in the control file after
// "Description: ", continuation lines indented by one space, each line
// ending in a newline.
func descriptionMD5(desc string) string {
	var b strings.Builder
	first, rest, more := strings.Cut(desc, "\n")
	b.WriteString(first)
	b.WriteByte('\n')
	for more {
		var seg string
		seg, rest, more = strings.Cut(rest, "\n")
		b.WriteByte(' ')
		b.WriteString(seg)
		b.WriteByte('\n')
	}
	sum := md5.Sum([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// packagesStanza is the Packages entry of p: the control fields plus where
// the file is and its digests. With Translations the long description moves
// to Translation-en, as in Debian.
func packagesStanza(s *Suite, p *Package, filename string, fi fileInfo) *deb822.Paragraph {
	st := p.controlParagraph()
	if s.Translations {
		desc := p.description()
		short, _, _ := strings.Cut(desc, "\n")
		st.Set("Description", short)
		st.Set("Description-md5", descriptionMD5(desc))
	}
	st.Set("Filename", filename)
	st.Set("Size", strconv.FormatInt(fi.Size, 10))
	if !s.NoMD5 {
		st.Set("MD5sum", fi.MD5)
	}
	if s.SHA1 {
		st.Set("SHA1", fi.SHA1)
	}
	st.Set("SHA256", fi.SHA256)
	return st
}

// translation is the Translation-en body for the packages (one entry per
// distinct name and description).
func translation(pkgs []Package) ([]byte, error) {
	seen := map[string]bool{}
	var ps []*deb822.Paragraph
	for i := range pkgs {
		desc := pkgs[i].description()
		sum := descriptionMD5(desc)
		if seen[pkgs[i].Name+"\x00"+sum] {
			continue
		}
		seen[pkgs[i].Name+"\x00"+sum] = true
		ps = append(ps, &deb822.Paragraph{Fields: []deb822.Field{
			{Name: "Package", Value: pkgs[i].Name},
			{Name: "Description-md5", Value: sum},
			{Name: "Description-en", Value: desc},
		}})
	}
	if len(ps) == 0 {
		return nil, nil
	}
	return paragraphsBytes(ps)
}

// contents is the Contents-<arch> body: every file of the architecture's
// packages (and those of "all") with the packages that ship it.
func contents(pkgs []Package, arch string) []byte {
	owners := map[string][]string{}
	for i := range pkgs {
		p := &pkgs[i]
		if p.Arch != arch && p.Arch != "all" {
			continue
		}
		for _, f := range p.dataFiles() {
			q := p.section() + "/" + p.Name
			if !slices.Contains(owners[f], q) {
				owners[f] = append(owners[f], q)
			}
		}
	}
	var b bytes.Buffer
	for _, f := range sortedKeys(owners) {
		slices.Sort(owners[f])
		fmt.Fprintf(&b, "%-55s %s\n", f, strings.Join(owners[f], ","))
	}
	return b.Bytes()
}

// sourcesStanza is the Sources entry of a source package whose files were
// written into infos.
func sourcesStanza(sp *sourcePkg, infos map[string]fileInfo) *deb822.Paragraph {
	names := append([]string{sp.dscName()}, sp.files...)
	fis := make([]fileInfo, len(names))
	for i, n := range names {
		fis[i] = infos[sp.dir()+"/"+n]
	}
	p := &deb822.Paragraph{}
	p.Set("Package", sp.name)
	p.Set("Format", sp.format())
	p.Set("Binary", strings.Join(sp.binaries, ", "))
	p.Set("Architecture", strings.Join(sp.arches, " "))
	p.Set("Version", sp.version)
	p.Set("Maintainer", "gatehouse apttest <apttest@example.org>")
	p.Set("Standards-Version", "4.6.2")
	p.Set("Directory", sp.dir())
	p.Set("Priority", "source")
	p.Set("Section", sp.section)
	p.Set("Files", fileList(names, fis, func(f fileInfo) string { return f.MD5 }))
	p.Set("Checksums-Sha256", fileList(names, fis, func(f fileInfo) string { return f.SHA256 }))
	return p
}
