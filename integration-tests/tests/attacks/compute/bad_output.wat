;; Writes /out/bad.csv with rows of unequal length: the output gate must refuse it, and
;; its error must not reveal where the provider keeps files.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "bad.csv")
  (data (i32.const 200) "a,b\n1\n2,3,4\n")
  (func (export "_start")
    ;; O_CREAT | O_TRUNC, rights fd_write (64)
    (drop (call $open (i32.const 4) (i32.const 0) (i32.const 100) (i32.const 7)
             (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12)))
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const 12))
    (drop (call $write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))))
