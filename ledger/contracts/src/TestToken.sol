// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title TestToken
/// @notice An ERC-20 for tests and local chains: anyone may mint. Never deploy it where
/// its balance would mean anything.
contract TestToken is ERC20 {
    constructor() ERC20("insitu test token", "ITT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
