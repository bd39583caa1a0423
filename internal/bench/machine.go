package bench

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// ReadMachine collects the machine facts a report needs, except the
// PostgreSQL and vault versions, which the caller knows. Facts that cannot
// be read are left empty.
func ReadMachine(workDir string) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), WorkDir: workDir}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = parseCPUModel(b)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemTotal, _ = parseStatusBytes(b, "MemTotal")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		path := workDir
		if p, err := filepath.EvalSymlinks(workDir); err == nil {
			path = p
		}
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		if fstype, source, mp := mountFor(b, path); fstype != "" {
			m.WorkDirFS = fstype + " on " + source + ", mounted at " + mp
		}
	}
	return m
}

// parseCPUModel returns the first "model name" of /proc/cpuinfo.
func parseCPUModel(b []byte) string {
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && string(bytes.TrimSpace(k)) == "model name" {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

// mountFor finds the mount that holds path (absolute, symlinks resolved) in
// the contents of /proc/self/mountinfo: the longest mount point that is path
// or one of its parents, the last one listed if several are stacked there.
func mountFor(mountinfo []byte, path string) (fstype, source, mountPoint string) {
	best := -1
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// ID parentID major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := unescapeMount(f[4])
		if !under(path, mp) || len(mp) < best {
			continue
		}
		best, fstype, source, mountPoint = len(mp), g[0], unescapeMount(g[1]), mp
	}
	return fstype, source, mountPoint
}

func under(path, dir string) bool {
	return dir == "/" || path == dir || strings.HasPrefix(path, dir+"/")
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
