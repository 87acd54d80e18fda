// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title AssetRegistry
/// @notice Registers insitu assets by DID. A DID is keccak256(owner, seed), so nobody can
/// squat another owner's identifier. The registry holds only what every party must agree
/// on: the owner, the providers allowed to serve and fulfil, a hash of the public metadata
/// (the DDO) and the priced services. Storage locations never touch the chain.
contract AssetRegistry {
    /// Service types. Download streams the asset; the others are added by later capabilities.
    uint8 public constant SERVICE_DOWNLOAD = 0;
    uint8 public constant SERVICE_QUERY = 1;
    uint8 public constant SERVICE_COMPUTE = 2;
    uint8 public constant SERVICE_TRAIN = 3;

    /// Priced terms of one service of an asset. `token` is zero for ETH.
    struct Service {
        uint8 serviceType;
        address token;
        uint256 price;
        /// How long access lasts once the provider fulfils, in seconds.
        uint64 accessDuration;
        /// How long the provider has to fulfil before the consumer may refund, in seconds.
        uint64 fulfillTimeout;
    }

    struct Asset {
        address owner;
        bytes32 metadataHash;
        string metadataUrl;
        address[] providers;
        Service[] services;
    }

    mapping(bytes32 => Asset) private assets;

    event AssetRegistered(bytes32 indexed did, address indexed owner, bytes32 metadataHash, string metadataUrl);
    event MetadataUpdated(bytes32 indexed did, bytes32 metadataHash, string metadataUrl);
    event ProviderAdded(bytes32 indexed did, address indexed provider);
    event ProviderRemoved(bytes32 indexed did, address indexed provider);
    event ServiceAdded(bytes32 indexed did, uint256 indexed index, Service service);
    event OwnershipTransferred(bytes32 indexed did, address indexed previousOwner, address indexed newOwner);

    error AssetExists(bytes32 did);
    error UnknownAsset(bytes32 did);
    error NotOwner(bytes32 did, address caller);
    error NotProvider(bytes32 did, address caller);
    error ZeroAddress();
    error InvalidService();

    /// The DID an owner gets for a seed.
    function computeDid(address owner, bytes32 seed) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(owner, seed));
    }

    /// Registers an asset owned by the caller.
    function register(
        bytes32 seed,
        bytes32 metadataHash,
        string calldata metadataUrl,
        address[] calldata providers,
        Service[] calldata services
    ) external returns (bytes32 did) {
        did = _register(msg.sender, seed, metadataHash, metadataUrl, providers, services);
    }

    /// Registers an asset owned by `owner` and served by the caller alone. This is how a
    /// provider publishes a compute result for its consumer: the consumer owns it (and so
    /// receives its payments and controls its metadata), the provider only serves it.
    function registerFor(
        address owner,
        bytes32 seed,
        bytes32 metadataHash,
        string calldata metadataUrl,
        Service[] calldata services
    ) external returns (bytes32 did) {
        if (owner == address(0)) revert ZeroAddress();
        address[] memory providers = new address[](1);
        providers[0] = msg.sender;
        did = _register(owner, seed, metadataHash, metadataUrl, providers, services);
    }

    function _register(
        address owner,
        bytes32 seed,
        bytes32 metadataHash,
        string calldata metadataUrl,
        address[] memory providers,
        Service[] calldata services
    ) internal returns (bytes32 did) {
        did = computeDid(owner, seed);
        Asset storage a = assets[did];
        if (a.owner != address(0)) revert AssetExists(did);
        a.owner = owner;
        a.metadataHash = metadataHash;
        a.metadataUrl = metadataUrl;
        emit AssetRegistered(did, owner, metadataHash, metadataUrl);
        for (uint256 i = 0; i < providers.length; i++) {
            if (providers[i] == address(0)) revert ZeroAddress();
            a.providers.push(providers[i]);
            emit ProviderAdded(did, providers[i]);
        }
        for (uint256 i = 0; i < services.length; i++) {
            _addService(did, a, services[i]);
        }
    }

    modifier onlyOwner(bytes32 did) {
        address owner = assets[did].owner;
        if (owner == address(0)) revert UnknownAsset(did);
        if (owner != msg.sender) revert NotOwner(did, msg.sender);
        _;
    }

    function setMetadata(bytes32 did, bytes32 metadataHash, string calldata metadataUrl) external onlyOwner(did) {
        Asset storage a = assets[did];
        a.metadataHash = metadataHash;
        a.metadataUrl = metadataUrl;
        emit MetadataUpdated(did, metadataHash, metadataUrl);
    }

    function addProvider(bytes32 did, address provider) external onlyOwner(did) {
        if (provider == address(0)) revert ZeroAddress();
        if (isProvider(did, provider)) return;
        assets[did].providers.push(provider);
        emit ProviderAdded(did, provider);
    }

    function removeProvider(bytes32 did, address provider) external onlyOwner(did) {
        address[] storage list = assets[did].providers;
        for (uint256 i = 0; i < list.length; i++) {
            if (list[i] == provider) {
                list[i] = list[list.length - 1];
                list.pop();
                emit ProviderRemoved(did, provider);
                return;
            }
        }
    }

    function addService(bytes32 did, Service calldata service) external onlyOwner(did) returns (uint256) {
        return _addService(did, assets[did], service);
    }

    function _addService(bytes32 did, Asset storage a, Service calldata service) internal returns (uint256 index) {
        if (service.serviceType > SERVICE_TRAIN || service.fulfillTimeout == 0 || service.accessDuration == 0) {
            revert InvalidService();
        }
        index = a.services.length;
        a.services.push(service);
        emit ServiceAdded(did, index, service);
    }

    function transferOwnership(bytes32 did, address newOwner) external onlyOwner(did) {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(did, assets[did].owner, newOwner);
        assets[did].owner = newOwner;
    }

    function ownerOf(bytes32 did) external view returns (address) {
        return assets[did].owner;
    }

    function isProvider(bytes32 did, address account) public view returns (bool) {
        address[] storage list = assets[did].providers;
        for (uint256 i = 0; i < list.length; i++) {
            if (list[i] == account) return true;
        }
        return false;
    }

    function getProviders(bytes32 did) external view returns (address[] memory) {
        return assets[did].providers;
    }

    function getAsset(bytes32 did)
        external
        view
        returns (address owner, bytes32 metadataHash, string memory metadataUrl, address[] memory providers, Service[] memory services)
    {
        Asset storage a = assets[did];
        if (a.owner == address(0)) revert UnknownAsset(did);
        return (a.owner, a.metadataHash, a.metadataUrl, a.providers, a.services);
    }

    function getService(bytes32 did, uint256 index) external view returns (address owner, Service memory service) {
        Asset storage a = assets[did];
        if (a.owner == address(0)) revert UnknownAsset(did);
        if (index >= a.services.length) revert InvalidService();
        return (a.owner, a.services[index]);
    }
}
