package archive

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits bound what an archive may unpack to.
type Limits struct {
	MaxTotalBytes int64   // sum of the unpacked files
	MaxFileBytes  int64   // one unpacked file
	MaxEntries    int     // entries in the archive
	MaxRatio      float64 // unpacked bytes / archive bytes
}

// DefaultLimits fit Hugging Face ONNX exports up to a few GiB.
var DefaultLimits = Limits{MaxTotalBytes: 16 << 30, MaxFileBytes: 16 << 30, MaxEntries: 1000, MaxRatio: 100}

// ErrUnsafe is wrapped by every refusal of an entry or a bomb.
var ErrUnsafe = errors.New("unsafe archive")

func unsafe(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsafe, fmt.Sprintf(format, a...))
}

// Extract unpacks the archive at src (.tar.gz or .zip, told by its content)
// into dest, which must not exist: it unpacks into a temp folder beside dest
// and renames it into place only when every entry was fine.
func Extract(ctx context.Context, src, dest string, lim Limits) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("extract: %s already exists", dest)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), ".extract-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	u := &unpacker{ctx: ctx, dir: tmp, lim: lim, archiveSize: max(st.Size(), 1), seen: map[string]bool{}}
	switch {
	case n >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		err = u.tarGz(f)
	case n == 4 && bytes.Equal(head, []byte("PK\x03\x04")):
		err = u.zip(f, st.Size())
	default:
		return fmt.Errorf("not a .tar.gz or .zip archive")
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return err
	}
	ok = true
	return nil
}

type unpacker struct {
	ctx         context.Context
	dir         string
	lim         Limits
	archiveSize int64
	total       int64
	entries     int
	seen        map[string]bool
}

// clean checks an entry name and returns its slash path inside the archive.
func (u *unpacker) clean(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) || strings.Contains(name, "\\") {
		return "", unsafe("entry name %q", name)
	}
	if path.IsAbs(name) || filepath.IsAbs(name) || (len(name) > 1 && name[1] == ':') {
		return "", unsafe("absolute path %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", unsafe("path traversal in %q", name)
		}
	}
	p := path.Clean(name)
	if p == "." {
		return "", nil
	}
	// a single top-level folder (model/config.json) is allowed, flattened later
	return p, nil
}

func (u *unpacker) count() error {
	u.entries++
	if u.lim.MaxEntries > 0 && u.entries > u.lim.MaxEntries {
		return unsafe("more than %d entries", u.lim.MaxEntries)
	}
	return u.ctx.Err()
}

func (u *unpacker) file(name string, r io.Reader, declared int64) error {
	p, err := u.clean(name)
	if err != nil || p == "" {
		return err
	}
	if u.seen[p] {
		return unsafe("duplicate entry %q", name)
	}
	u.seen[p] = true
	if declared > u.lim.MaxFileBytes && u.lim.MaxFileBytes > 0 {
		return unsafe("%q is larger than %d bytes", name, u.lim.MaxFileBytes)
	}
	dst := filepath.Join(u.dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	budget := u.budget()
	n, err := io.Copy(out, io.LimitReader(r, budget+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n > budget {
		return unsafe("archive unpacks past its limits (total %d bytes, ratio %.0f)", u.lim.MaxTotalBytes, u.lim.MaxRatio)
	}
	u.total += n
	return u.ctx.Err()
}

// budget is how many more bytes may be unpacked.
func (u *unpacker) budget() int64 {
	b := int64(1) << 62
	if u.lim.MaxTotalBytes > 0 {
		b = min(b, u.lim.MaxTotalBytes-u.total)
	}
	if u.lim.MaxRatio > 0 {
		b = min(b, int64(u.lim.MaxRatio*float64(u.archiveSize))-u.total)
	}
	if u.lim.MaxFileBytes > 0 {
		b = min(b, u.lim.MaxFileBytes)
	}
	return max(b, 0)
}

func (u *unpacker) dirEntry(name string) error {
	p, err := u.clean(name)
	if err != nil || p == "" {
		return err
	}
	return os.MkdirAll(filepath.Join(u.dir, filepath.FromSlash(p)), 0o755)
}

func (u *unpacker) tarGz(r io.Reader) error {
	gz, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		if err := u.count(); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if err := u.file(h.Name, tr, h.Size); err != nil {
				return err
			}
		case tar.TypeDir:
			if err := u.dirEntry(h.Name); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
		case tar.TypeSymlink, tar.TypeLink:
			return unsafe("link entry %q", h.Name)
		default:
			return unsafe("entry %q of type %q (devices, fifos and the like are refused)", h.Name, string(h.Typeflag))
		}
	}
}

func (u *unpacker) zip(r io.ReaderAt, size int64) error {
	// archive/zip allocates for every central directory record before we see
	// one: check the declared count first, and bound the walk's reads in case
	// the count lies (3M records made it allocate 750 MiB)
	br := &budgetReaderAt{r: r}
	if u.lim.MaxEntries > 0 {
		n, err := zipDeclaredEntries(r, size)
		if err != nil {
			return fmt.Errorf("zip: %w", err)
		}
		if n > uint64(u.lim.MaxEntries) {
			return unsafe("the zip declares %d entries: more than %d entries", n, u.lim.MaxEntries)
		}
		br.on, br.left = true, directoryBudget(u.lim.MaxEntries)
	}
	zr, err := zip.NewReader(br, size)
	if errors.Is(err, errDirectoryBudget) {
		return unsafe("zip central directory holds more than %d entries", u.lim.MaxEntries)
	}
	if err != nil {
		return fmt.Errorf("zip: %w", err)
	}
	br.on = false
	for _, f := range zr.File {
		if err := u.count(); err != nil {
			return err
		}
		mode := f.Mode()
		switch {
		case mode.IsDir():
			if err := u.dirEntry(f.Name); err != nil {
				return err
			}
		case mode&fs.ModeSymlink != 0:
			return unsafe("link entry %q", f.Name)
		case !mode.IsRegular():
			return unsafe("entry %q is not a regular file", f.Name)
		default:
			rc, err := f.Open()
			if err != nil {
				return fmt.Errorf("zip %s: %w", f.Name, err)
			}
			err = u.file(f.Name, rc, int64(f.UncompressedSize64))
			rc.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// ModelRoot returns the folder of dir holding config.json: dir itself, or its
// only subfolder (archives made with `tar czf m.tgz model/`).
func ModelRoot(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir
	}
	entries, err := os.ReadDir(dir)
	if err == nil && len(entries) == 1 && entries[0].IsDir() {
		sub := filepath.Join(dir, entries[0].Name())
		if _, err := os.Stat(filepath.Join(sub, "config.json")); err == nil {
			return sub
		}
	}
	return dir
}
