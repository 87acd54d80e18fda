;; Rights: fd_read (2) only. Tries to read files outside /data: a relative escape from the /data preopen (fd 3),
;; an absolute path through it, and /etc/passwd through /out (fd 4). If any open
;; succeeds, the file is copied to the log and the run "succeeds"; if all fail, it
;; exits with status 13.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "../../../../../../etc/passwd")
  (data (i32.const 200) "/etc/passwd")
  (data (i32.const 300) "../data/../../etc/shadow")
  ;; Opens (dirfd, path, len); on success leaks the file and exits 0.
  (func $try (param $dir i32) (param $path i32) (param $len i32)
    (if (i32.eqz (call $open (local.get $dir) (i32.const 1) (local.get $path) (local.get $len)
                   (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))
      (then
        ;; iov at 0: buffer 1024, 4096 bytes
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (drop (call $read (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))
        (i32.store (i32.const 4) (i32.load (i32.const 8)))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $exit (i32.const 0)))))
  (func (export "_start")
    (call $try (i32.const 3) (i32.const 100) (i32.const 28))
    (call $try (i32.const 3) (i32.const 200) (i32.const 11))
    (call $try (i32.const 4) (i32.const 100) (i32.const 28))
    (call $try (i32.const 3) (i32.const 300) (i32.const 24))
    (call $exit (i32.const 13))))
