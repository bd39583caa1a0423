package bench

import (
	"os"
	"runtime"
	"testing"
)

const sampleMountinfo = `22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:22 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=100k
25 24 252:2 / /tmp/disk rw shared:6 - xfs /dev/vdb rw
26 22 252:3 / /mnt/my\040disk rw - btrfs /dev/vdc rw
27 22 252:4 / /tmpfoo rw - ext4 /dev/vdd rw
28 24 0:30 / /tmp rw - overlay overlay rw
`

func TestMountFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path, fstype, source, mp string
	}{
		{"/home/x", "ext4", "/dev/vda", "/"},
		{"/", "ext4", "/dev/vda", "/"},
		{"/tmp/disk/bench", "xfs", "/dev/vdb", "/tmp/disk"},
		{"/tmp/diskette", "overlay", "overlay", "/tmp"}, // not under /tmp/disk; the later /tmp mount wins
		{"/tmpfoo/a", "ext4", "/dev/vdd", "/tmpfoo"},
		{"/mnt/my disk/a", "btrfs", "/dev/vdc", "/mnt/my disk"},
	}
	for _, tt := range tests {
		fstype, source, mp := mountFor([]byte(sampleMountinfo), tt.path)
		if fstype != tt.fstype || source != tt.source || mp != tt.mp {
			t.Errorf("mountFor(%q) = %q %q %q, want %q %q %q", tt.path, fstype, source, mp, tt.fstype, tt.source, tt.mp)
		}
	}
}

func TestParseCPUModel(t *testing.T) {
	t.Parallel()
	in := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) @ 2.80GHz\nprocessor\t: 1\nmodel name\t: other\n"
	if got := parseCPUModel([]byte(in)); got != "Intel(R) Xeon(R) @ 2.80GHz" {
		t.Errorf("parseCPUModel = %q", got)
	}
	if got := parseCPUModel([]byte("processor : 0\n")); got != "" {
		t.Errorf("parseCPUModel without a model = %q, want empty", got)
	}
}

func TestReadMachine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m := ReadMachine(dir)
	if m.Cores != runtime.NumCPU() || m.GoVersion != runtime.Version() || m.WorkDir != dir {
		t.Errorf("ReadMachine = %+v", m)
	}
	if _, err := os.Stat("/proc/meminfo"); err == nil && (m.MemTotal <= 0 || m.WorkDirFS == "" || m.Kernel == "") {
		t.Errorf("on Linux, ReadMachine must find memory, kernel and filesystem: %+v", m)
	}
}
