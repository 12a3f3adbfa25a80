package udf

// PID is the process id of the instance's sandbox process (tests only).
func (i *Instance) PID() int { return i.w.cmd.Process.Pid }
