package rules

import (
	"embed"
	"io/fs"
)

//go:embed scenarios/*.yaml
var builtinFS embed.FS

// BuiltinDefault is the scenario unicorn runs when given no rules.
const BuiltinDefault = "cud-2019"

// Builtin returns the scenarios embedded in the binary: cud-2019 (active by
// default), cud-2020, cud-2019-third-parties and cud-2019-phased (optional), with their
// service catalogue. File names in errors and rule references start with
// "builtin:".
func Builtin() (*Set, error) {
	sub, err := fs.Sub(builtinFS, "scenarios")
	if err != nil {
		return nil, err
	}
	return LoadFS(prefixFS{sub}, "builtin:")
}

// prefixFS serves fsys under the name "builtin:" so that rule positions
// read "builtin:cud-2019.yaml:12" and cannot be mistaken for local files.
type prefixFS struct{ fsys fs.FS }

func (p prefixFS) Open(name string) (fs.File, error) {
	const prefix = "builtin:"
	if name == prefix {
		return p.fsys.Open(".")
	}
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		name = name[len(prefix):]
		if name[0] == '/' {
			name = name[1:]
		}
	}
	return p.fsys.Open(name)
}
