;; The fallback example algorithm, hand-written for machines where the Rust target
;; wasm32-wasip1 cannot be installed. It reads the staged input /data/input.arrow to
;; its end and writes /out/summary.csv with one row: the input's size in bytes.
;;
;; Memory: 0..8 iovec, 8 nread/nwritten, 12 input fd, 16 output fd,
;; 100.. path strings, 200..232 digits, 1024.. read buffer (64 KiB).
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 100) "input.arrow")
  (data (i32.const 120) "summary.csv")
  (data (i32.const 140) "input_bytes\n")
  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $exit (i32.const 5)))))
  (func (export "_start")
    (local $total i64) (local $n i32) (local $pos i32)
    ;; /data is fd 3, /out is fd 4.
    (if (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 11)
              (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (call $exit (i32.const 2))))
    (loop $more
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $read (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $exit (i32.const 3))))
      (local.set $n (i32.load (i32.const 8)))
      (local.set $total (i64.add (local.get $total) (i64.extend_i32_u (local.get $n))))
      (br_if $more (local.get $n)))
    ;; O_CREAT | O_TRUNC; rights: fd_read (2) to read, fd_write (64) to write
    (if (call $open (i32.const 4) (i32.const 0) (i32.const 120) (i32.const 11)
              (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $exit (i32.const 4))))
    (call $write_all (i32.load (i32.const 16)) (i32.const 140) (i32.const 12))
    ;; Decimal digits of $total, right to left, ending with a newline at 231.
    (local.set $pos (i32.const 231))
    (i32.store8 (local.get $pos) (i32.const 10))
    (loop $digit
      (local.set $pos (i32.sub (local.get $pos) (i32.const 1)))
      (i32.store8 (local.get $pos)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $total) (i64.const 10)))))
      (local.set $total (i64.div_u (local.get $total) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $total) (i64.const 0))))
    (call $write_all (i32.load (i32.const 16)) (local.get $pos)
      (i32.sub (i32.const 232) (local.get $pos)))))
