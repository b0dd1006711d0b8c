package rules

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// loader reads rule files into a Set, collecting every error.
type loader struct {
	fsys    fs.FS // nil means the operating system's files
	set     *Set
	errs    errs
	pending []*pendingRule
	skipped int // list lines unicorn cannot express, see include
}

func newLoader(fsys fs.FS) *loader {
	return &loader{fsys: fsys, set: &Set{Services: map[string]*Service{}, Devices: map[string][]netip.Prefix{}}}
}

func (ld *loader) open(name string) (fs.File, error) {
	if ld.fsys == nil {
		return os.Open(name)
	}
	return ld.fsys.Open(name)
}

func (ld *loader) join(dir, name string) string {
	if ld.fsys == nil {
		if filepath.IsAbs(name) {
			return name
		}
		return filepath.Join(dir, name)
	}
	if strings.HasSuffix(dir, ":") {
		return dir + name // "builtin:" + "cud-2019.yaml"
	}
	return path.Join(dir, name)
}

func (ld *loader) dir(name string) string {
	if ld.fsys == nil {
		return filepath.Dir(name)
	}
	return path.Dir(name)
}

// Load reads rule files and directories from the operating system. A
// directory loads every *.yaml and *.yml file in it, in name order. The
// error, if any, is an ErrorList with every problem in every file.
func Load(paths ...string) (*Set, error) { return load(nil, paths) }

// LoadFS is Load over a file system, such as the embedded built-ins.
func LoadFS(fsys fs.FS, paths ...string) (*Set, error) { return load(fsys, paths) }

// Parse loads one rule file given as text; name is used in errors, and
// include: paths are relative to its directory on the operating system.
func Parse(name string, data []byte) (*Set, error) {
	ld := newLoader(nil)
	ld.decodeFile(name, data)
	return ld.finish()
}

func load(fsys fs.FS, paths []string) (*Set, error) {
	ld := newLoader(fsys)
	if len(paths) == 0 {
		ld.errs.add(Pos{}, "", "no rule files given")
	}
	for _, p := range paths {
		ld.loadPath(p)
	}
	return ld.finish()
}

func (ld *loader) finish() (*Set, error) {
	ld.resolve()
	ld.set.Skipped = ld.skipped
	for _, svc := range ld.set.Services {
		svc.domains.trim()
		svc.hosts.trim()
	}
	if err := ld.errs.err(); err != nil {
		return nil, err
	}
	return ld.set, nil
}

func (ld *loader) loadPath(name string) {
	f, err := ld.open(name)
	if err != nil {
		ld.errs.add(Pos{File: name}, "", "%s", friendlyOpenErr(err))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		ld.errs.add(Pos{File: name}, "", "%v", err)
		return
	}
	if !st.IsDir() {
		data, err := io.ReadAll(f)
		if err != nil {
			ld.errs.add(Pos{File: name}, "", "%v", err)
			return
		}
		ld.decodeFile(name, data)
		return
	}
	dir, ok := f.(fs.ReadDirFile)
	if !ok {
		ld.errs.add(Pos{File: name}, "", "cannot list directory")
		return
	}
	entries, err := dir.ReadDir(-1)
	if err != nil {
		ld.errs.add(Pos{File: name}, "", "%v", err)
		return
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	found := false
	for _, e := range entries {
		ext := strings.ToLower(path.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		found = true
		ld.loadPath(ld.join(name, e.Name()))
	}
	if !found {
		ld.errs.add(Pos{File: name}, "", "directory has no .yaml or .yml rule files")
	}
}

func friendlyOpenErr(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file or directory"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return fmt.Sprint(err)
}
