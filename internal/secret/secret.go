package secret

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// maxSize bounds what a secret file may hold; a bigger file is a mistake.
const maxSize = 64 << 10

// Read returns the trimmed content of the secret file at path. what names the
// secret in errors ("admin token").
func Read(what, path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%s: no file given", what)
	}
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s file %s does not exist", what, path)
		}
		return "", fmt.Errorf("%s file: %w", what, err)
	}
	if st.IsDir() || st.Size() > maxSize {
		return "", fmt.Errorf("%s file %s is not a small regular file", what, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s file: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s file %s is empty", what, path)
	}
	return v, nil
}

// Optional reads path when it is set and returns fallback otherwise.
func Optional(what, path, fallback string) (string, error) {
	if path == "" {
		return fallback, nil
	}
	return Read(what, path)
}
