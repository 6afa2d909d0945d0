// covid-mtl's configuration of MONAI Label's bundled OHIF (served at /ohif/app-config.js instead of MONAI Label's).
// Changed from MONAI Label 0.8.5's: no DICOM upload and no reject from the viewer. The server's DICOMweb proxy
// passes a viewer's reads (apps/covid_mtl/lib/dicomweb_proxy.py) and one write: the DICOM SEG that OHIF's
// "Export DICOM SEG" stores (STOW-RS to wadoRoot + "/studies"), which the server checks and saves as the series'
// correction (apps/covid_mtl/lib/viewer_seg.py); the PACS gets the server's own correction SEG. See docs/SECURITY.md.
window.config = {
  routerBasename: '/ohif/',
  showStudyList: true,
  extensions: [],
  modes: [],
  // below flag is for performance reasons, but it might not work for all servers

  showWarningMessageForCrossOrigin: true,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  defaultDataSourceName: 'dicomweb',
  useSharedArrayBuffer: 'FALSE',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb',
      configuration: {
        friendlyName: 'Orthanc Server',
        name: 'Orthanc',
        wadoUriRoot: '/proxy/dicom/wado',
        qidoRoot: '/proxy/dicom/qido',
        wadoRoot: '/proxy/dicom/wado',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: false,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        dicomUploadEnabled: false,
        bulkDataURI: {
          enabled: true,
        },
      },
    },
  ],
};
