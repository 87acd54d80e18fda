// Compiles the contracts in src/ with the pinned solc-js and writes one artifact per
// contract to out/ (ABI, creation and runtime bytecode). The Rust bindings read these
// artifacts through alloy's `sol!`, so Rust and Solidity cannot drift apart.
//
//   node scripts/compile.mjs          write out/*.json
//   node scripts/compile.mjs --check  recompile and fail if out/ differs (CI)
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const srcDir = path.join(root, "src");
const outDir = path.join(root, "out");
const check = process.argv.includes("--check");

// Contracts whose artifacts the Rust side uses. Everything else (OpenZeppelin) is a library.
const EXPORTED = ["AssetRegistry", "AgreementManager", "TestToken"];

const sources = {};
for (const file of fs.readdirSync(srcDir).sort()) {
  if (file.endsWith(".sol")) {
    sources[`src/${file}`] = { content: fs.readFileSync(path.join(srcDir, file), "utf8") };
  }
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 10000 },
    evmVersion: "cancun",
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

function findImport(importPath) {
  const candidate = path.join(root, "node_modules", importPath);
  if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  return { error: `import not found: ${importPath} (run npm ci in ledger/contracts)` };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

let differences = 0;
if (!check) fs.mkdirSync(outDir, { recursive: true });
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    if (!EXPORTED.includes(name)) continue;
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: `solc-js ${solc.version()}`,
      abi: c.abi,
      bytecode: { object: `0x${c.evm.bytecode.object}` },
      deployedBytecode: { object: `0x${c.evm.deployedBytecode.object}` },
    };
    const text = JSON.stringify(artifact, null, 2) + "\n";
    const target = path.join(outDir, `${name}.json`);
    if (check) {
      const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : "";
      if (current !== text) {
        console.error(`out/${name}.json differs from what src/ compiles to: run npm run build`);
        differences++;
      }
    } else {
      fs.writeFileSync(target, text);
      console.log(`wrote out/${name}.json`);
    }
  }
}
if (differences > 0) process.exit(1);
if (check) console.log("contract artifacts match their sources");
