use anyhow::{Context, Result};

use crate::args::DevCommand;

pub async fn run(cmd: DevCommand) -> Result<()> {
    match cmd {
        DevCommand::Deploy {
            chain,
            key,
            fee_bps,
            fee_receiver,
            test_token,
        } => {
            if super::is_embedded(&chain)? {
                let (c, genesis) =
                    insitu_ledger::EmbeddedChain::open(Some(&chain.data_dir.join("chain")))?;
                crate::output::outln!("export INSITU_CHAIN=embedded");
                crate::output::outln!("export INSITU_DATA_DIR={}", chain.data_dir.display());
                crate::output::outln!(
                    "export INSITU_CHAIN_ID={}",
                    insitu_ledger::embedded::EMBEDDED_CHAIN_ID
                );
                crate::output::outln!("export INSITU_REGISTRY={}", genesis.contracts.registry);
                crate::output::outln!("export INSITU_AGREEMENTS={}", genesis.contracts.agreements);
                if test_token {
                    crate::output::outln!("export INSITU_TEST_TOKEN={}", c.test_token()?);
                }
                let _ = (key, fee_bps, fee_receiver);
                return Ok(());
            }
            let signer = super::load_key(&key)?;
            let deployed = insitu_ledger::deploy_contracts(
                &chain.rpc_url,
                signer.clone(),
                fee_bps,
                fee_receiver,
            )
            .await
            .context("deploying the insitu contracts")?;
            crate::output::outln!("export INSITU_CHAIN_ID={}", deployed.chain_id);
            crate::output::outln!("export INSITU_REGISTRY={}", deployed.addresses.registry);
            crate::output::outln!("export INSITU_AGREEMENTS={}", deployed.addresses.agreements);
            crate::output::outln!("export INSITU_FROM_BLOCK={}", deployed.deploy_block);
            if test_token {
                let token = insitu_ledger::deploy_test_token(&chain.rpc_url, signer)
                    .await
                    .context("deploying the test token")?;
                crate::output::outln!("export INSITU_TEST_TOKEN={token}");
            }
        }
        DevCommand::Mint {
            chain,
            key,
            token,
            to,
            amount,
        } => {
            let amount = super::parse_amount(&amount)?;
            if super::is_embedded(&chain)? {
                super::embedded_chain(&chain)?.mint_test_token(to, amount)?;
                eprintln!("minted {amount} to {to}");
                let _ = (key, token);
                return Ok(());
            }
            let signer = super::load_key(&key)?;
            insitu_ledger::mint_test_token(&chain.rpc_url, signer, token, to, amount)
                .await
                .context("minting test tokens")?;
            eprintln!("minted {amount} to {to}");
        }
    }
    Ok(())
}
