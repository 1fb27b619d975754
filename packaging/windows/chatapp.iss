; Inno Setup 6 script for chatapp: installs the PyInstaller folder for the current
; user (no administrator rights), adds a Start-menu shortcut that opens the
; console program, optionally a desktop shortcut and the `chatapp` command on
; the user's PATH. packaging/build.py runs it on Windows when ISCC.exe is found:
;   iscc /DAppVersion=0.1.0 /DSourceDir=dist\chatapp-0.1.0-windows-x86_64\chatapp
;        /DOutputDir=dist /DOutputBase=chatapp-0.1.0-windows-x86_64-setup chatapp.iss
; Not built or run here (written on Linux): see packaging/README.md.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\chatapp-" + AppVersion + "-windows-x86_64\chatapp"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif
#ifndef OutputBase
  #define OutputBase "chatapp-" + AppVersion + "-windows-x86_64-setup"
#endif

[Setup]
AppId={{6F1C2E0A-3B7D-4C52-9A8E-2D0C6B1F4A77}
AppName=chatapp
AppVersion={#AppVersion}
AppVerName=chatapp {#AppVersion}
AppPublisher=chatapp
AppComments=Chat, offline, with a GPT trained from scratch
DefaultDirName={localappdata}\Programs\chatapp
DefaultGroupName=chatapp
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename={#OutputBase}
SetupIconFile=..\icons\chatapp.ico
UninstallDisplayIcon={app}\chatapp.exe
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
ChangesEnvironment=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the chatapp command to my PATH"; GroupDescription: "Command line:"

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "..\icons\chatapp.ico"; DestDir: "{app}"; Flags: ignoreversion

[Icons]
; chatapp.exe is a console program: the shortcut opens it in a console window
Name: "{userprograms}\chatapp"; Filename: "{app}\chatapp.exe"; WorkingDir: "{userdocs}"; IconFilename: "{app}\chatapp.ico"; Comment: "Chat, offline, with a GPT trained from scratch"
Name: "{userdesktop}\chatapp"; Filename: "{app}\chatapp.exe"; WorkingDir: "{userdocs}"; IconFilename: "{app}\chatapp.ico"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[UninstallDelete]
; the cache (saved prompt states, compiled kernels) is rebuilt when needed; conversations and settings stay
Type: filesandordirs; Name: "{localappdata}\chatapp\chatapp\Cache"

[Run]
Filename: "{app}\chatapp.exe"; Description: "Start chatapp"; Flags: nowait postinstall skipifsilent

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;

procedure RemoveFromPath(Dir: string);
var
  Path: string;
  P: Integer;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path) then
    exit;
  P := Pos(';' + Uppercase(Dir), Uppercase(Path));
  if P > 0 then
  begin
    Delete(Path, P, Length(Dir) + 1);
    RegWriteExpandStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Path);
  end;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  // the user's conversations and settings (%LOCALAPPDATA%\chatapp) are kept
  if CurUninstallStep = usPostUninstall then
    RemoveFromPath(ExpandConstant('{app}'));
end;
