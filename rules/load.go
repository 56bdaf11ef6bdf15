package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Load compiles the configuration files at paths into one set. A path may
// be a file (read whatever its name) or a directory, whose *.yaml and *.yml
// files are read in name order; names starting with a dot (such as the
// ..data links of a Kubernetes ConfigMap volume) and subdirectories are
// skipped, and symbolic links are followed. Each file holds one domain; a
// domain defined by two files is an error, as in envoyproxy/ratelimit. On
// any problem Load returns nil and an [Errors] listing every problem of
// every file.
func Load(paths ...string) (*Set, error) {
	srcs, err := readSources(paths)
	if err != nil {
		return nil, err
	}
	return build(srcs)
}

// readSources reads the files named by paths.
func readSources(paths []string) ([]source, error) {
	if len(paths) == 0 {
		return nil, Errors{{Msg: "no configuration path given"}}
	}
	var srcs []source
	var errs Errors
	for _, p := range paths {
		files, err := listFiles(p)
		if err != nil {
			errs = append(errs, &Error{Pos: Position{File: p}, Msg: err.Error()})
			continue
		}
		for _, f := range files {
			data, err := readFile(f)
			if err != nil {
				errs = append(errs, &Error{Pos: Position{File: f}, Msg: err.Error()})
				continue
			}
			key, rerr := filepath.Rel(p, f)
			if rerr != nil || key == "." {
				key = filepath.Base(f)
			}
			srcs = append(srcs, source{name: f, key: key, data: data})
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return srcs, nil
}

// readFile reads a file, refusing files larger than MaxFileSize.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("file of %d bytes is too large (at most %d)", st.Size(), MaxFileSize)
	}
	data := make([]byte, 0, st.Size()+1)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if len(data) > MaxFileSize {
			return nil, fmt.Errorf("file is too large (at most %d bytes)", MaxFileSize)
		}
		if err != nil {
			break
		}
	}
	return data, nil
}

// listFiles returns the configuration files of a path.
func listFiles(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return nil, fmt.Errorf("cannot list directory: %w", err)
	}
	var files []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		ext := strings.ToLower(filepath.Ext(name))
		if ext != ".yaml" && ext != ".yml" {
			continue
		}
		full := filepath.Join(p, name)
		if st, err := os.Stat(full); err != nil || st.IsDir() {
			continue // a dangling link or a directory named *.yaml
		}
		files = append(files, full)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("directory holds no *.yaml or *.yml file")
	}
	return files, nil
}
