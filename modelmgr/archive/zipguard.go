package archive

import (
	"encoding/binary"
	"errors"
	"io"
)

// zipDeclaredEntries returns the entry count the end-of-central-directory
// record declares (the zip64 record's when the classic one overflows),
// found the way archive/zip finds it, without walking the directory. It
// answers 0 when there is no such record; zip.NewReader then refuses.
func zipDeclaredEntries(r io.ReaderAt, size int64) (uint64, error) {
	const endLen = 22
	n := min(size, 65*1024)
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, size-n); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	p := -1
	for i := len(buf) - endLen; i >= 0; i-- {
		if buf[i] == 'P' && buf[i+1] == 'K' && buf[i+2] == 5 && buf[i+3] == 6 {
			if int(binary.LittleEndian.Uint16(buf[i+endLen-2:]))+endLen+i <= len(buf) {
				p = i
			}
			break
		}
	}
	if p < 0 {
		return 0, nil
	}
	end := buf[p:]
	thisDisk := uint64(binary.LittleEndian.Uint16(end[8:]))
	total := uint64(binary.LittleEndian.Uint16(end[10:]))
	count := max(thisDisk, total)
	if total != 0xffff && binary.LittleEndian.Uint32(end[12:]) != 0xffff && binary.LittleEndian.Uint32(end[16:]) != 0xffffffff {
		return count, nil
	}
	// zip64: the locator sits just before the classic record
	endOff := size - n + int64(p)
	if endOff < 20 {
		return count, nil
	}
	loc := make([]byte, 20)
	if _, err := r.ReadAt(loc, endOff-20); err != nil {
		return count, nil
	}
	if binary.LittleEndian.Uint32(loc) != 0x07064b50 {
		return count, nil
	}
	off := binary.LittleEndian.Uint64(loc[8:])
	if off > uint64(size) || uint64(size)-off < 56 {
		return count, nil
	}
	rec := make([]byte, 56)
	if _, err := r.ReadAt(rec, int64(off)); err != nil || binary.LittleEndian.Uint32(rec) != 0x06064b50 {
		return count, nil
	}
	return max(count, binary.LittleEndian.Uint64(rec[24:]), binary.LittleEndian.Uint64(rec[32:])), nil
}

// errDirectoryBudget ends zip.NewReader's walk of a central directory larger
// than the entry limit allows.
var errDirectoryBudget = errors.New("central directory larger than the entry limit allows")

// budgetReaderAt fails every read once more than left bytes were read while
// on: zip.NewReader walks every central directory header there is, whatever
// the end record says, allocating for each; the budget bounds that walk.
type budgetReaderAt struct {
	r    io.ReaderAt
	left int64
	on   bool
}

func (b *budgetReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if b.on {
		if int64(len(p)) > b.left {
			return 0, errDirectoryBudget
		}
		b.left -= int64(len(p))
	}
	return b.r.ReadAt(p, off)
}

// directoryBudget is how many bytes zip.NewReader may read for maxEntries
// entries: the end records, and a generous 1 KiB per header.
func directoryBudget(maxEntries int) int64 {
	return 256<<10 + int64(maxEntries)*(1<<10)
}
